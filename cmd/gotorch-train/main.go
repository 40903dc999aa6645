// Command gotorch-train trains scDiffusion (autoencoder, Cell_Unet
// diffusion backbone) on single-cell RNA-seq data with libtorch, watching
// CPU and GPU memory as it goes. Run `gotorch-train --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cmd/internal/blasexec"
)

// Exit codes, documented in the help text (EXIT STATUS).
const (
	exitOK     = 0
	exitError  = 1 // unexpected failure
	exitUsage  = 2 // bad flags or arguments
	exitData   = 3 // unreadable or invalid input data or checkpoint
	exitOOM    = 4 // out of memory (after the report and any retries)
	exitDevice = 5 // the requested device is unavailable (e.g. no CUDA)
)

const exitStatusHelp = `EXIT STATUS:
   0  success (also after Ctrl-C/SIGTERM, once the checkpoint is written; --help, --version)
   1  unexpected error
   2  usage error: unknown command or flag, bad flag value, stray argument, missing required flag
   3  data error: missing, empty, unreadable, truncated or invalid input file or checkpoint
   4  out of memory (the report above says why and what to change), also when predicted by --microbatch auto
   5  device unavailable (e.g. --device cuda without a GPU or with the CPU build, --use_fp16 with the CPU build)
Every failure ends with one line "gotorch-train: ..." naming the flag or file and what was expected;
nothing is written to disk before the flags are valid and the inputs have been read.`

// usageError and dataError classify failures for the exit code.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

type dataError struct{ err error }

func (e dataError) Error() string { return e.err.Error() }
func (e dataError) Unwrap() error { return e.err }

// memoryError is a run refused because it is predicted not to fit (exit 4
// without an out-of-memory report: nothing ran out yet).
type memoryError struct{ err error }

func (e memoryError) Error() string { return e.err.Error() }
func (e memoryError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func dataErr(err error) error {
	if err == nil {
		return nil
	}
	var d dataError
	if errors.As(err, &d) {
		return err
	}
	return dataError{err}
}

// exitCode maps an error to the documented exit status, in one place.
func exitCode(err error) int {
	var u usageError
	var d dataError
	var m memoryError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, ct.ErrOutOfMemory), errors.As(err, &m):
		return exitOOM
	case errors.Is(err, ct.ErrNoCUDA):
		return exitDevice
	case errors.As(err, &u):
		return exitUsage
	case errors.As(err, &d):
		return exitData
	}
	return exitError
}

func main() {
	blasexec.Reexec(os.Stderr)
	// SIGINT/SIGTERM cancel the context: training finishes the current step,
	// writes a checkpoint and returns.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := mainRun(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// mainRun runs the command line and returns the exit status; only main exits.
func mainRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	args, err := prepareArgs(app, args)
	if err == nil {
		err = app.RunContext(ctx, args)
	}
	if err != nil {
		fmt.Fprintln(stderr, "gotorch-train:", userMessage(err))
	}
	return exitCode(err)
}

// newApp builds the command line. Every command listed here gets the
// shared machinery of cli.go: reference-style booleans (prepareArgs reads
// the command's flags from here), stray arguments refused, usage errors
// classified for the exit status.
func newApp(stdout, stderr io.Writer) *cli.App {
	onUsage := func(c *cli.Context, err error, isSubcommand bool) error { return usageError{err} }
	app := &cli.App{
		Name:  "gotorch-train",
		Usage: "train scDiffusion on single-cell data with libtorch, memory-aware",
		Description: "Pipeline: train-ae (autoencoder on an .h5ad) → encode (cells → 128-d latents) → train (Cell_Unet diffusion)\n" +
			"→ train-classifier (noisy-latent classifier, for guidance) → sample (generated cells) → eval (generated vs real).\n" +
			"Flags keep the reference scDiffusion scripts' names; every flag can also be set with the\n" +
			"environment variable GOTORCH_<FLAG NAME IN CAPITALS>; " + boolHelp + ".\n\n" + exitStatusHelp,
		Writer:                 stdout,
		ErrWriter:              stderr,
		HideHelpCommand:        true,
		HideVersion:            true,
		UseShortOptionHandling: false,
		OnUsageError:           onUsage,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "version", Usage: "print the version line (program, commit, libtorch, CUDA, driver, Go) and exit"},
		},
		Action: appAction,
		Commands: []*cli.Command{
			newInfoCommand(),
			newTrainAECommand(),
			newEncodeCommand(),
			newTrainCommand(),
			newTrainClassifierCommand(),
			newSampleCommand(),
			newEvalCommand(),
		},
	}
	for _, c := range app.Commands {
		c.OnUsageError = onUsage
		c.Action = noArgs(c.Action)
		if slices.ContainsFunc(c.Flags, func(f cli.Flag) bool { _, ok := f.(*cli.BoolFlag); return ok }) {
			c.Description = strings.TrimSpace(c.Description + "\n\nBoolean flags: " + boolHelp + ".")
		}
	}
	return app
}

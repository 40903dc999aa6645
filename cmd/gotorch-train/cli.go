package main

// Command-line machinery shared by every command. newApp applies it to each
// command it lists, so a new command gets all of it by being listed there:
//
//   - prepareArgs lets boolean flags take the reference's spellings
//     (argparse str2bool: --use_fp16 False, --use_fp16 yes) besides Go's
//     (--use_fp16, --use_fp16=false), for every *cli.BoolFlag a command
//     declares;
//   - noArgs makes a positional argument a usage error (the Go flag parser
//     stops at the first one and silently ignores every flag after it);
//   - the validators below check a flag's value when it is set (as the
//     flag's Action), so a bad value is a usage error naming the flag
//     before anything runs;
//   - userMessage prints an error as one line in the user's terms.
//
// A command's own Action should then validate the whole configuration, and
// check its input files, before it creates or changes anything on disk
// (see runTrain: files are created in the trainer's BeforeRun hook).

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

// parseBool reads argparse str2bool's spellings (the reference scripts'
// boolean flags), case-insensitively: yes/true/t/y/1 and no/false/f/n/0.
func parseBool(s string) (value, ok bool) {
	switch strings.ToLower(s) {
	case "yes", "true", "t", "y", "1":
		return true, true
	case "no", "false", "f", "n", "0":
		return false, true
	}
	return false, false
}

// boolHelp is how the help text describes a boolean flag's values.
const boolHelp = "booleans are given alone (--use_fp16) or with a value as in the reference scripts (--use_fp16 True, --use_fp16=false; yes/no, true/false, t/f, y/n, 1/0)"

// flagName splits "--name=value" or "-name" into the flag name and value.
func flagName(arg string) (name, value string, hasValue, ok bool) {
	switch {
	case strings.HasPrefix(arg, "--"):
		arg = arg[2:]
	case strings.HasPrefix(arg, "-"):
		arg = arg[1:]
	default:
		return "", "", false, false
	}
	if arg == "" || arg[0] == '-' || arg[0] == '=' {
		return "", "", false, false
	}
	name, value, hasValue = strings.Cut(arg, "=")
	return name, value, hasValue, true
}

// prepareArgs rewrites the boolean flags of the command named in args to
// Go's form: "--flag WORD" and "--flag=WORD" with a str2bool WORD become
// "--flag=true|false". It knows each command's flags from app (bool or
// value-taking), so a value of another flag ("--model_name yes") is never
// mistaken for a boolean. Arguments after "--" are left alone.
func prepareArgs(app *cli.App, args []string) ([]string, error) {
	if len(args) < 2 {
		return args, nil
	}
	out := []string{args[0]}
	i := 1
	for ; i < len(args) && strings.HasPrefix(args[i], "-"); i++ { // app-level flags
		out = append(out, args[i])
	}
	if i == len(args) {
		return out, nil
	}
	cmd := app.Command(args[i])
	out = append(out, args[i])
	i++
	if cmd == nil {
		return append(out, args[i:]...), nil
	}
	bools := map[string]bool{"help": true, "h": true}
	values := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			if isBool {
				bools[n] = true
			} else {
				values[n] = true
			}
		}
	}
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...), nil
		}
		name, value, hasValue, ok := flagName(a)
		switch {
		case !ok:
			out = append(out, a)
		case bools[name] && hasValue:
			b, ok := parseBool(value)
			if !ok {
				return nil, usagef("--%s=%s: a boolean flag takes true/false, yes/no, t/f, y/n or 1/0", name, value)
			}
			out = append(out, fmt.Sprintf("--%s=%t", name, b))
		case bools[name] && i+1 < len(args):
			if b, ok := parseBool(args[i+1]); ok {
				out = append(out, fmt.Sprintf("--%s=%t", name, b))
				i++
			} else {
				out = append(out, a)
			}
		case values[name] && !hasValue && i+1 < len(args):
			out = append(out, a, args[i+1])
			i++
		default:
			out = append(out, a)
		}
	}
	return out, nil
}

// noArgs wraps a command's action: positional arguments are a usage error.
func noArgs(action cli.ActionFunc) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.Args().Present() {
			return usagef("unexpected argument %q: %s %s takes flags only (%s; see --help)",
				c.Args().First(), c.App.Name, c.Command.Name, boolHelp)
		}
		if action == nil {
			return cli.ShowCommandHelp(c, c.Command.Name)
		}
		return action(c)
	}
}

// appAction runs for the program without a command, or with an unknown one.
func appAction(c *cli.Context) error {
	if c.Bool("version") {
		fmt.Fprintln(c.App.Writer, versionLine())
		return nil
	}
	if !c.Args().Present() {
		_ = cli.ShowAppHelp(c)
		return usagef("no command given (commands: %s)", strings.Join(commandNames(c.App), ", "))
	}
	if c.Args().First() == "help" {
		if name := c.Args().Get(1); name != "" && c.App.Command(name) != nil {
			return cli.ShowCommandHelp(c, name)
		}
		return cli.ShowAppHelp(c)
	}
	return usagef("unknown command %q (commands: %s; see gotorch-train --help)", c.Args().First(), strings.Join(commandNames(c.App), ", "))
}

func commandNames(app *cli.App) []string {
	var names []string
	for _, c := range app.VisibleCommands() {
		names = append(names, c.Name)
	}
	return names
}

// ------------------------------------------------------------ validators
//
// Each returns a flag Action: urfave/cli runs it, before the command, for
// a flag that was set on the command line or through its environment
// variable (defaults are valid by construction).

// intAtLeast accepts an int flag's value v >= lo.
func intAtLeast(name string, lo int) func(*cli.Context, int) error {
	return func(_ *cli.Context, v int) error {
		if v < lo {
			return usagef("--%s %d: must be at least %d", name, v, lo)
		}
		return nil
	}
}

// intBetween accepts lo <= v <= hi.
func intBetween(name string, lo, hi int) func(*cli.Context, int) error {
	return func(_ *cli.Context, v int) error {
		if v < lo || v > hi {
			return usagef("--%s %d: must be between %d and %d", name, v, lo, hi)
		}
		return nil
	}
}

// floatAtLeast accepts a finite v >= lo (strict: v > lo).
func floatAtLeast(name string, lo float64, strict bool) func(*cli.Context, float64) error {
	return func(_ *cli.Context, v float64) error {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < lo || (strict && v == lo) {
			rel := "at least"
			if strict {
				rel = "greater than"
			}
			return usagef("--%s %v: must be a finite number %s %v", name, v, rel, lo)
		}
		return nil
	}
}

// finite accepts any finite number (a scale that may be negative).
func finite(name string) func(*cli.Context, float64) error {
	return func(_ *cli.Context, v float64) error {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return usagef("--%s %v: must be a finite number", name, v)
		}
		return nil
	}
}

// oneOf accepts one of the listed values.
func oneOf(name string, allowed ...string) func(*cli.Context, string) error {
	return func(_ *cli.Context, v string) error {
		if !slices.Contains(allowed, v) {
			return usagef("--%s %q: want %s", name, v, orList(allowed))
		}
		return nil
	}
}

// parsedBy accepts a value parse accepts.
func parsedBy(name, want string, parse func(string) error) func(*cli.Context, string) error {
	return func(_ *cli.Context, v string) error {
		if err := parse(v); err != nil {
			return usagef("--%s %q: want %s", name, v, want)
		}
		return nil
	}
}

func orList(v []string) string {
	if len(v) < 2 {
		return strings.Join(v, "")
	}
	return strings.Join(v[:len(v)-1], ", ") + " or " + v[len(v)-1]
}

// ------------------------------------------------------------- messages

// pkgPrefix matches the "package: " prefixes of this module's errors.
var pkgPrefix = regexp.MustCompile(`(^|: |\(|; )(?:trainer|autoencoder|classifier|generate|monitor|cgotorch|ptfile|scdata|hdf5|npz|nn|diffusion|cellunet|safetensors|atomicfile|lzf|eval|dist): `)

// userMessage renders err for the user: one line, without the Go package
// prefixes the libraries put in front of their errors.
func userMessage(err error) string {
	msg := err.Error()
	for {
		next := pkgPrefix.ReplaceAllString(msg, "$1")
		if next == msg {
			break
		}
		msg = next
	}
	msg = strings.Join(strings.FieldsFunc(msg, func(r rune) bool { return r == '\n' || r == '\r' }), " ")
	return strings.TrimSpace(msg)
}

// flagErr prefixes an input file's error with the flag that named it, and
// classifies it as a data error (exit 3) unless it already has a class.
func flagErr(flag string, err error) error {
	if err == nil {
		return nil
	}
	var u usageError
	if errors.As(err, &u) {
		return usageError{fmt.Errorf("--%s: %w", flag, err)}
	}
	return dataErr(fmt.Errorf("--%s: %w", flag, err))
}

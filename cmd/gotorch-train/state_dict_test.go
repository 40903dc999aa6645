package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/ptfile"
	"github.com/scdiffusion/gotorch-train/nn"
)

// writeSCimilarity writes an SCimilarity-style directory for the
// reference's autoencoder shape (hidden 1024×3, latent 128) over genes
// genes: encoder.ckpt and decoder.ckpt as torch.save({"state_dict": ...})
// with every value 0.01 + a per-tensor offset, and gene_order.tsv. It
// returns the encoder's network.1.1.weight value.
func writeSCimilarity(t *testing.T, dir string, genes int64) float32 {
	t.Helper()
	st := nn.NewStore(ct.CPU)
	defer st.Close()
	m, err := autoencoder.New(st.Root(), autoencoder.DefaultConfig(genes))
	if err != nil {
		t.Fatal(err)
	}
	parts := map[string]*ptfile.Dict{"encoder": {}, "decoder": {}}
	for k, p := range m.Params() {
		if p.T.DType() == ct.Float32 {
			ct.NoGrad(func() { p.T.Fill_(0.01 + float64(k)*0.001) })
		}
		part, key, _ := strings.Cut(p.Name, ".")
		pt, err := ct.PTTensor("", p.T)
		if err != nil {
			t.Fatal(err)
		}
		parts[part].Set(key, pt)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for part, sd := range parts {
		if err := ct.SavePT(filepath.Join(dir, part+".ckpt"), &ptfile.Dict{Keys: []any{"state_dict"}, Values: []any{sd}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "gene_order.tsv"), []byte("A\nB\nC\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for k, p := range m.Params() {
		if p.Name == "encoder.network.1.1.weight" {
			return float32(0.01 + float64(k)*0.001)
		}
	}
	t.Fatal("no encoder.network.1.1.weight")
	return 0
}

// TestTrainAEStateDict: --state_dict starts training from the directory's
// inner layers; bad directories are data errors before anything is written.
func TestTrainAEStateDict(t *testing.T) {
	dir := t.TempDir()
	sc := filepath.Join(dir, "scimilarity")
	want := writeSCimilarity(t, sc, 3000) // another gene count than the data's 1989
	save := filepath.Join(dir, "ae")
	code, out := run(t, context.Background(), "train-ae", "--data_dir", pbmc(t), "--save_dir", save, "--state_dict", sc,
		"--max_steps", "1", "--threads", "2")
	if code != exitOK || !strings.Contains(out, "initialised from") || !strings.Contains(out, "gene_order.tsv lists 3 genes") {
		t.Fatalf("train-ae --state_dict exit %d:\n%s", code, out)
	}
	sd, err := ct.LoadPT(filepath.Join(save, autoencoder.CheckpointName(0, 0)), ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.FreeAll(sd)
	i := slices.IndexFunc(sd, func(n ct.Named) bool { return n.Name == "encoder.network.1.1.weight" })
	if i < 0 {
		t.Fatal("checkpoint lacks encoder.network.1.1.weight")
	}
	for _, v := range sd[i].T.Float32s()[:100] {
		if d := v - want; d > 2e-3 || d < -2e-3 { // one AdamW step (lr 5e-4) from the loaded value
			t.Fatalf("encoder.network.1.1.weight = %v after one step, loaded %v", v, want)
		}
	}

	os.Remove(filepath.Join(sc, "decoder.ckpt"))
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"missing dir", []string{"--state_dict", filepath.Join(dir, "nope")}, exitData, "nope: no such file"},
		{"no decoder", []string{"--state_dict", sc}, exitData, "no decoder.ckpt"},
		{"a file", []string{"--state_dict", filepath.Join(sc, "encoder.ckpt")}, exitData, "not a directory"},
		{"with resume", []string{"--state_dict", sc, "--resume_checkpoint", "x.pt"}, exitUsage, "cannot be combined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fresh := filepath.Join(dir, "fresh-"+strings.ReplaceAll(tc.name, " ", "-"))
			code, out := run(t, context.Background(), append([]string{"train-ae", "--data_dir", pbmc(t), "--save_dir", fresh, "--max_steps", "1"}, tc.args...)...)
			if code != tc.code || !strings.Contains(out, tc.msg) {
				t.Errorf("exit %d (want %d), output:\n%s\nwant it to mention %q", code, tc.code, out, tc.msg)
			}
			if _, err := os.Stat(fresh); err == nil {
				t.Errorf("%s was created", fresh)
			}
		})
	}
}

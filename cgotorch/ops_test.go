package cgotorch_test

import (
	"strings"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

type inputs map[string]*ct.Tensor

// opCases mirrors the op table of testdata/make_golden.py: each entry
// computes the op from the golden inputs through cgotorch.
var opCases = []struct {
	name string
	fn   func(d inputs) *ct.Tensor
}{
	{"neg", func(d inputs) *ct.Tensor { return d["x"].Neg() }},
	{"exp", func(d inputs) *ct.Tensor { return d["x"].Exp() }},
	{"log", func(d inputs) *ct.Tensor { return d["pos"].Log() }},
	{"log1p", func(d inputs) *ct.Tensor { return d["pos"].Log1p() }},
	{"expm1", func(d inputs) *ct.Tensor { return d["x"].Expm1() }},
	{"sqrt", func(d inputs) *ct.Tensor { return d["pos"].Sqrt() }},
	{"rsqrt", func(d inputs) *ct.Tensor { return d["pos"].Rsqrt() }},
	{"sin", func(d inputs) *ct.Tensor { return d["x"].Sin() }},
	{"cos", func(d inputs) *ct.Tensor { return d["x"].Cos() }},
	{"abs", func(d inputs) *ct.Tensor { return d["x"].Abs() }},
	{"silu", func(d inputs) *ct.Tensor { return d["x"].SiLU() }},
	{"relu", func(d inputs) *ct.Tensor { return d["x"].ReLU() }},
	{"sigmoid", func(d inputs) *ct.Tensor { return d["x"].Sigmoid() }},
	{"tanh", func(d inputs) *ct.Tensor { return d["x"].Tanh() }},
	{"square", func(d inputs) *ct.Tensor { return d["x"].Square() }},
	{"reciprocal", func(d inputs) *ct.Tensor { return d["pos"].Reciprocal() }},
	{"gelu", func(d inputs) *ct.Tensor { return d["x"].GELU() }},
	{"add", func(d inputs) *ct.Tensor { return d["x"].Add(d["y"]) }},
	{"sub", func(d inputs) *ct.Tensor { return d["x"].Sub(d["y"]) }},
	{"mul", func(d inputs) *ct.Tensor { return d["x"].Mul(d["y"]) }},
	{"div", func(d inputs) *ct.Tensor { return d["x"].Div(d["pos"]) }},
	{"pow", func(d inputs) *ct.Tensor { return d["pos"].Pow(d["x"]) }},
	{"maximum", func(d inputs) *ct.Tensor { return d["x"].Maximum(d["y"]) }},
	{"minimum", func(d inputs) *ct.Tensor { return d["x"].Minimum(d["y"]) }},
	{"add_scaled", func(d inputs) *ct.Tensor { return d["x"].AddScaled(d["y"], 0.3) }},
	{"add_s", func(d inputs) *ct.Tensor { return d["x"].AddScalar(1.5) }},
	{"sub_s", func(d inputs) *ct.Tensor { return d["x"].SubScalar(1.5) }},
	{"mul_s", func(d inputs) *ct.Tensor { return d["x"].MulScalar(1.5) }},
	{"div_s", func(d inputs) *ct.Tensor { return d["x"].DivScalar(1.5) }},
	{"pow_s", func(d inputs) *ct.Tensor { return d["pos"].PowScalar(1.5) }},
	{"rsub_s", func(d inputs) *ct.Tensor { return d["x"].RSub(1.5) }},
	{"rdiv_s", func(d inputs) *ct.Tensor { return d["pos"].RDiv(1.5) }},
	{"clamp", func(d inputs) *ct.Tensor { return d["x"].Clamp(-0.5, 0.7) }},
	{"clamp_min", func(d inputs) *ct.Tensor { return d["x"].ClampMin(-0.5) }},
	{"where", func(d inputs) *ct.Tensor { return ct.Where(d["cond"], d["x"], d["y"]) }},
	{"sum", func(d inputs) *ct.Tensor { return d["x"].Sum() }},
	{"mean", func(d inputs) *ct.Tensor { return d["x"].Mean() }},
	{"sum_d1", func(d inputs) *ct.Tensor { return d["x"].SumDims(false, 1) }},
	{"mean_d0k", func(d inputs) *ct.Tensor { return d["x"].MeanDims(true, 0) }},
	{"amax_d1", func(d inputs) *ct.Tensor { return d["x"].MaxDims(false, 1) }},
	{"amin_d1", func(d inputs) *ct.Tensor { return d["x"].MinDims(false, 1) }},
	{"var_d1", func(d inputs) *ct.Tensor { return d["x"].Var(false, 1) }},
	{"var_biased_d1", func(d inputs) *ct.Tensor { return d["x"].VarBiased(false, 1) }},
	{"var_all", func(d inputs) *ct.Tensor { return d["x"].Var(false) }},
	{"norm_all", func(d inputs) *ct.Tensor { return d["x"].Norm() }},
	{"norm_d1", func(d inputs) *ct.Tensor { return d["x"].NormDims(false, 1) }},
	{"max_all", func(d inputs) *ct.Tensor { return d["x"].Max() }},
	{"argmax_d1", func(d inputs) *ct.Tensor { return d["x"].Argmax(1, false) }},
	{"cumsum_d1", func(d inputs) *ct.Tensor { return d["x"].Cumsum(1) }},
	{"view", func(d inputs) *ct.Tensor { return d["x"].View(6, 4) }},
	{"reshape", func(d inputs) *ct.Tensor { return d["x"].T().Reshape(-1) }},
	{"unsqueeze", func(d inputs) *ct.Tensor { return d["x"].Unsqueeze(1) }},
	{"transpose", func(d inputs) *ct.Tensor { return d["x"].Transpose(0, 1).Contiguous() }},
	{"permute", func(d inputs) *ct.Tensor { return d["b3"].Permute(2, 0, 1).Contiguous() }},
	{"expand", func(d inputs) *ct.Tensor { return d["b"].Unsqueeze(0).Expand(3, 5).Contiguous() }},
	{"narrow", func(d inputs) *ct.Tensor { return d["x"].Narrow(1, 2, 3).Contiguous() }},
	{"index_select", func(d inputs) *ct.Tensor { return d["x"].IndexSelect(1, d["idx"]) }},
	{"gather", func(d inputs) *ct.Tensor { return d["x"].Gather(1, d["gidx"]) }},
	{"cat", func(d inputs) *ct.Tensor { return ct.Cat([]*ct.Tensor{d["x"], d["y"]}, 0) }},
	{"stack", func(d inputs) *ct.Tensor { return ct.Stack([]*ct.Tensor{d["x"], d["y"]}, 1) }},
	{"matmul", func(d inputs) *ct.Tensor { return d["x"].MatMul(d["m"]) }},
	{"linear", func(d inputs) *ct.Tensor { return d["x"].Linear(d["w"], d["b"]) }},
	{"linear_nobias", func(d inputs) *ct.Tensor { return d["x"].Linear(d["w"], nil) }},
	{"linear3d", func(d inputs) *ct.Tensor { return d["b3"].Linear(d["w"], d["b"]) }},
	{"layer_norm", func(d inputs) *ct.Tensor { return d["x"].LayerNorm([]int64{6}, d["lnw"], d["lnb"], 1e-5) }},
	{"layer_norm_noaffine", func(d inputs) *ct.Tensor { return d["x"].LayerNorm([]int64{6}, nil, nil, 1e-5) }},
	{"prelu1", func(d inputs) *ct.Tensor { return d["x"].PReLU(d["prelu1"]) }},
	{"prelu6", func(d inputs) *ct.Tensor { return d["x"].PReLU(d["prelu6"]) }},
	{"softmax", func(d inputs) *ct.Tensor { return d["x"].Softmax(1) }},
	{"log_softmax", func(d inputs) *ct.Tensor { return d["x"].LogSoftmax(1) }},
	{"normalize", func(d inputs) *ct.Tensor { return d["x"].Normalize(2, 1, 1e-12) }},
	{"mse_mean", func(d inputs) *ct.Tensor { return d["x"].MSELoss(d["y"], ct.ReduceMean) }},
	{"mse_sum", func(d inputs) *ct.Tensor { return d["x"].MSELoss(d["y"], ct.ReduceSum) }},
	{"mse_none", func(d inputs) *ct.Tensor { return d["x"].MSELoss(d["y"], ct.ReduceNone) }},
	{"ce_mean", func(d inputs) *ct.Tensor { return d["x"].CrossEntropy(d["cls"], ct.ReduceMean) }},
	{"ce_none", func(d inputs) *ct.Tensor { return d["x"].CrossEntropy(d["cls"], ct.ReduceNone) }},
	{"isfinite", func(d inputs) *ct.Tensor { return d["special"].IsFinite() }},
	{"isnan", func(d inputs) *ct.Tensor { return d["special"].IsNaN() }},
	{"to_f64", func(d inputs) *ct.Tensor { return d["x"].ToDType(ct.Float64) }},
	{"to_f16", func(d inputs) *ct.Tensor { return d["x"].ToDType(ct.Float16) }},
	{"to_bf16", func(d inputs) *ct.Tensor { return d["x"].ToDType(ct.BFloat16) }},
	{"to_i64", func(d inputs) *ct.Tensor { return d["x"].MulScalar(10).ToDType(ct.Int64) }},
	{"bn_eval", func(d inputs) *ct.Tensor {
		s := d["bnx"].Scope()
		rm, rv := s.Full(0.5, ct.Options{}, 6), s.Full(2, ct.Options{}, 6)
		return d["bnx"].BatchNorm(d["bnw"], d["bnb"], rm, rv, false, 0.1, 1e-5)
	}},
}

// TestOpsMatchPyTorch checks every op's output, and its gradients where the
// golden file has them, against PyTorch (tolerance: rtol 1e-5, atol 1e-6).
func TestOpsMatchPyTorch(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	g := golden(t, s, "testdata/ops_golden.safetensors")
	seen := map[string]bool{}
	for _, tc := range opCases {
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			ss := ct.NewScope()
			defer ss.Close()
			d := inputs{}
			var wrt []string
			for k := range g {
				if strings.HasPrefix(k, tc.name+".grad.") {
					wrt = append(wrt, strings.TrimPrefix(k, tc.name+".grad."))
				}
			}
			for k, v := range g {
				if name, ok := strings.CutPrefix(k, "in."); ok {
					d[name] = ss.Adopt(v.Clone())
				}
			}
			for _, k := range wrt {
				d[k].SetRequiresGrad(true)
			}
			got := tc.fn(d)
			want := g[tc.name+".out"]
			if want.DType() == ct.Float16 || want.DType() == ct.BFloat16 {
				got, want = got.ToDType(ct.Float32), want.ToDType(ct.Float32)
			}
			assertClose(t, tc.name, got, want, rtol, atol)
			if len(wrt) == 0 {
				return
			}
			got.Mul(g[tc.name+".gout"]).Sum().Backward()
			for _, k := range wrt {
				assertClose(t, tc.name+" grad "+k, d[k].Grad(ss), g[tc.name+".grad."+k], rtol, atol)
			}
		})
	}
	for k := range g {
		if name, ok := strings.CutSuffix(k, ".out"); ok && !seen[name] && name != "bn_train" {
			t.Errorf("golden op %q has no Go test case", name)
		}
	}
}

func TestBatchNormTrainingMatchesPyTorch(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	g := golden(t, s, "testdata/ops_golden.safetensors")
	x := g["in.bnx"].Clone().SetRequiresGrad(true)
	w := g["in.bnw"].Clone().SetRequiresGrad(true)
	b := g["in.bnb"].Clone().SetRequiresGrad(true)
	rm, rv := s.Zeros(ct.Options{}, 6), s.Ones(ct.Options{}, 6)
	y := x.BatchNorm(w, b, rm, rv, true, 0.1, 1e-5)
	assertClose(t, "bn_train", y, g["bn_train.out"], rtol, atol)
	y.Mul(g["bn_train.gout"]).Sum().Backward()
	assertClose(t, "grad x", x.Grad(s), g["bn_train.grad.bnx"], rtol, atol)
	assertClose(t, "grad w", w.Grad(s), g["bn_train.grad.bnw"], rtol, atol)
	assertClose(t, "grad b", b.Grad(s), g["bn_train.grad.bnb"], rtol, atol)
	assertClose(t, "running_mean", rm, g["bn_train.running_mean"], rtol, atol)
	assertClose(t, "running_var", rv, g["bn_train.running_var"], rtol, atol)
}

// TestRandomStreamsMatchPyTorch: the same seed gives the same numbers as
// torch.manual_seed / torch.Generator in Python (exact).
func TestRandomStreamsMatchPyTorch(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	g := golden(t, s, "testdata/ops_golden.safetensors")
	if err := ct.ManualSeed(42); err != nil {
		t.Fatal(err)
	}
	o := ct.Options{}
	rt, at := cgotorchtest.RNGTolerance()
	assertClose(t, "randn", s.Randn(o, nil, 3, 4), g["rand.randn"], rt, at)
	assertClose(t, "rand", s.Rand(o, nil, 3, 4), g["rand.rand"], rt, at)
	assertClose(t, "randint", s.RandInt(0, 10, ct.Options{}, nil, 5), g["rand.randint"], 0, 0)
	assertClose(t, "randperm", s.RandPerm(7, ct.Options{}, nil), g["rand.randperm"], 0, 0)
	assertClose(t, "uniform", s.Empty(o, 5).Uniform_(-1, 2, nil), g["rand.uniform"], rt, at)
	assertClose(t, "normal", s.Empty(o, 5).Normal_(1, 2, nil), g["rand.normal"], rt, at)
	assertClose(t, "dropout", s.Ones(o, 4, 8).Dropout(0.5, true, nil), g["rand.dropout"], rt, at)
	gen, err := ct.NewGenerator(ct.CPU, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer gen.Close()
	assertClose(t, "generator randn", s.Randn(o, gen, 6), g["rand.gen_randn"], rt, at)
}

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

// opK is each op's accumulation length for cgotorchtest's tolerance rule
// (tolerance.go), covering the output and the gradients (forward plus
// backward sums) on the golden inputs: x, y are [4,6], bnx [8,6], b3
// [2,4,6], m [6,3], w [5,6]. Ops not listed are elementwise or exact: K = 1.
var opK = map[string]int{
	"sum": 24, "mean": 24 + 1, "sum_d1": 6, "mean_d0k": 4 + 1, "amax_d1": 1, "amin_d1": 1,
	"var_d1": 2*6 + 2, "var_biased_d1": 2*6 + 2, "var_all": 2*24 + 2, "norm_all": 24 + 1, "norm_d1": 6 + 1,
	"cumsum_d1": 6, "matmul": 6 + 4, "linear": 7 + 5, "linear_nobias": 6 + 5, "linear3d": 7 + 8,
	"layer_norm": 2*6 + 6 + 4 + 4, "layer_norm_noaffine": 2*6 + 4, "softmax": 6 + 6 + 2, "log_softmax": 6 + 6 + 2,
	"normalize": 6 + 6 + 2, "mse_mean": 24 + 2, "mse_sum": 24 + 1, "ce_mean": 6 + 6 + 4 + 2, "ce_none": 6 + 2,
	"bn_eval": 8 + 2,
}

// linearScale gives Σ|t| per output element of the products (the sharpest
// form of the rule), for the ops that are one.
var linearScale = map[string]func(s *ct.Scope, d inputs) *ct.Tensor{
	"matmul":        func(s *ct.Scope, d inputs) *ct.Tensor { return cgotorchtest.AbsLinearScale(s, d["x"], d["m"].T(), nil) },
	"linear":        func(s *ct.Scope, d inputs) *ct.Tensor { return cgotorchtest.AbsLinearScale(s, d["x"], d["w"], d["b"]) },
	"linear_nobias": func(s *ct.Scope, d inputs) *ct.Tensor { return cgotorchtest.AbsLinearScale(s, d["x"], d["w"], nil) },
	"linear3d":      func(s *ct.Scope, d inputs) *ct.Tensor { return cgotorchtest.AbsLinearScale(s, d["b3"], d["w"], d["b"]) },
}

// TestOpsMatchPyTorch checks every op's output, and its gradients where the
// golden file has them, against PyTorch under the tolerance rule (opK;
// matrix products with their per-element scale).
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
				// One correctly rounded conversion: compare in float32, exactly.
				cgotorchtest.AssertClose(t, tc.name, got.ToDType(ct.Float32), want.ToDType(ct.Float32), 0, 0)
				return
			}
			k := max(opK[tc.name], 1)
			if sc, ok := linearScale[tc.name]; ok {
				cgotorchtest.AssertFP32Elementwise(t, tc.name, got, want, sc(ss, d), k)
			} else {
				cgotorchtest.AssertFP32(t, tc.name, got, want, cgotorchtest.FP32{K: k})
			}
			if len(wrt) == 0 {
				return
			}
			got.Mul(g[tc.name+".gout"]).Sum().Backward()
			for _, w := range wrt {
				cgotorchtest.AssertFP32(t, tc.name+" grad "+w, d[w].Grad(ss), g[tc.name+".grad."+w], cgotorchtest.FP32{K: k})
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
	// Batch statistics over 8 rows (mean, variance), then the backward
	// pass's two sums over the batch: K = 2·8 + 2·8 + 4.
	tol := cgotorchtest.FP32{K: 2*8 + 2*8 + 4}
	cgotorchtest.AssertFP32(t, "bn_train", y, g["bn_train.out"], tol)
	y.Mul(g["bn_train.gout"]).Sum().Backward()
	cgotorchtest.AssertFP32(t, "grad x", x.Grad(s), g["bn_train.grad.bnx"], tol)
	cgotorchtest.AssertFP32(t, "grad w", w.Grad(s), g["bn_train.grad.bnw"], tol)
	cgotorchtest.AssertFP32(t, "grad b", b.Grad(s), g["bn_train.grad.bnb"], tol)
	cgotorchtest.AssertFP32(t, "running_mean", rm, g["bn_train.running_mean"], tol)
	cgotorchtest.AssertFP32(t, "running_var", rv, g["bn_train.running_var"], tol)
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

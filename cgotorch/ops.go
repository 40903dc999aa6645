package cgotorch

/*
#include "cgotorch.h"
*/
import "C"

import "unsafe"

// Tensor operations. They panic with *Error on failure (bad shape, dtype
// mismatch, out of memory): wrap a step in Try or Scope.Run to get an error.
// Methods ending in an underscore modify their receiver in place, as in
// PyTorch; every other method leaves its inputs unchanged and returns a new
// tensor owned by the scope of its first owned input.

func pick(ts ...*Tensor) *Scope {
	for _, t := range ts {
		if t != nil && t.scope != nil {
			return t.scope
		}
	}
	return nil
}

func (t *Tensor) unary(op C.int32_t, name string) *Tensor {
	var out C.cgt_tensor
	must(name, C.cgt_unary(op, t.handle(name), &out))
	return newTensor(out, t.scope)
}

func (t *Tensor) unaryInPlace(op C.int32_t, name string) *Tensor {
	must(name, C.cgt_unary_(op, t.handle(name)))
	return t
}

func (t *Tensor) binary(op C.int32_t, o *Tensor, name string) *Tensor {
	var out C.cgt_tensor
	must(name, C.cgt_binary(op, t.handle(name), o.handle(name), &out))
	return newTensor(out, pick(t, o))
}

func (t *Tensor) binaryInPlace(op C.int32_t, o *Tensor, name string) *Tensor {
	must(name, C.cgt_binary_(op, t.handle(name), o.handle(name)))
	return t
}

func (t *Tensor) scalarOp(op C.int32_t, v float64, reversed bool, name string) *Tensor {
	var out C.cgt_tensor
	r := C.int32_t(0)
	if reversed {
		r = 1
	}
	must(name, C.cgt_binary_scalar(op, t.handle(name), C.double(v), r, &out))
	return newTensor(out, t.scope)
}

func (t *Tensor) scalarInPlace(op C.int32_t, v float64, name string) *Tensor {
	must(name, C.cgt_binary_scalar_(op, t.handle(name), C.double(v)))
	return t
}

// Elementwise unary functions.

func (t *Tensor) Neg() *Tensor        { return t.unary(C.CGT_UOP_NEG, "neg") }
func (t *Tensor) Exp() *Tensor        { return t.unary(C.CGT_UOP_EXP, "exp") }
func (t *Tensor) Log() *Tensor        { return t.unary(C.CGT_UOP_LOG, "log") }
func (t *Tensor) Log1p() *Tensor      { return t.unary(C.CGT_UOP_LOG1P, "log1p") }
func (t *Tensor) Expm1() *Tensor      { return t.unary(C.CGT_UOP_EXPM1, "expm1") }
func (t *Tensor) Sqrt() *Tensor       { return t.unary(C.CGT_UOP_SQRT, "sqrt") }
func (t *Tensor) Rsqrt() *Tensor      { return t.unary(C.CGT_UOP_RSQRT, "rsqrt") }
func (t *Tensor) Sin() *Tensor        { return t.unary(C.CGT_UOP_SIN, "sin") }
func (t *Tensor) Cos() *Tensor        { return t.unary(C.CGT_UOP_COS, "cos") }
func (t *Tensor) Abs() *Tensor        { return t.unary(C.CGT_UOP_ABS, "abs") }
func (t *Tensor) SiLU() *Tensor       { return t.unary(C.CGT_UOP_SILU, "silu") }
func (t *Tensor) ReLU() *Tensor       { return t.unary(C.CGT_UOP_RELU, "relu") }
func (t *Tensor) Sigmoid() *Tensor    { return t.unary(C.CGT_UOP_SIGMOID, "sigmoid") }
func (t *Tensor) Tanh() *Tensor       { return t.unary(C.CGT_UOP_TANH, "tanh") }
func (t *Tensor) Square() *Tensor     { return t.unary(C.CGT_UOP_SQUARE, "square") }
func (t *Tensor) Reciprocal() *Tensor { return t.unary(C.CGT_UOP_RECIPROCAL, "reciprocal") }
func (t *Tensor) Floor() *Tensor      { return t.unary(C.CGT_UOP_FLOOR, "floor") }
func (t *Tensor) Sign() *Tensor       { return t.unary(C.CGT_UOP_SIGN, "sign") }
func (t *Tensor) GELU() *Tensor       { return t.unary(C.CGT_UOP_GELU, "gelu") }

// IsFinite returns a bool tensor, true where t is neither inf nor NaN.
func (t *Tensor) IsFinite() *Tensor { return t.unary(C.CGT_UOP_ISFINITE, "isfinite") }

// IsNaN returns a bool tensor, true where t is NaN.
func (t *Tensor) IsNaN() *Tensor { return t.unary(C.CGT_UOP_ISNAN, "isnan") }

// LogicalNot negates a bool tensor.
func (t *Tensor) LogicalNot() *Tensor { return t.unary(C.CGT_UOP_LOGICAL_NOT, "logical_not") }

// In-place unary functions.

func (t *Tensor) Neg_() *Tensor  { return t.unaryInPlace(C.CGT_UOP_NEG, "neg_") }
func (t *Tensor) Exp_() *Tensor  { return t.unaryInPlace(C.CGT_UOP_EXP, "exp_") }
func (t *Tensor) Log_() *Tensor  { return t.unaryInPlace(C.CGT_UOP_LOG, "log_") }
func (t *Tensor) Sqrt_() *Tensor { return t.unaryInPlace(C.CGT_UOP_SQRT, "sqrt_") }
func (t *Tensor) SiLU_() *Tensor { return t.unaryInPlace(C.CGT_UOP_SILU, "silu_") }
func (t *Tensor) ReLU_() *Tensor { return t.unaryInPlace(C.CGT_UOP_RELU, "relu_") }
func (t *Tensor) Abs_() *Tensor  { return t.unaryInPlace(C.CGT_UOP_ABS, "abs_") }

// Binary functions with broadcasting.

func (t *Tensor) Add(o *Tensor) *Tensor     { return t.binary(C.CGT_BOP_ADD, o, "add") }
func (t *Tensor) Sub(o *Tensor) *Tensor     { return t.binary(C.CGT_BOP_SUB, o, "sub") }
func (t *Tensor) Mul(o *Tensor) *Tensor     { return t.binary(C.CGT_BOP_MUL, o, "mul") }
func (t *Tensor) Div(o *Tensor) *Tensor     { return t.binary(C.CGT_BOP_DIV, o, "div") }
func (t *Tensor) Pow(o *Tensor) *Tensor     { return t.binary(C.CGT_BOP_POW, o, "pow") }
func (t *Tensor) Maximum(o *Tensor) *Tensor { return t.binary(C.CGT_BOP_MAXIMUM, o, "maximum") }
func (t *Tensor) Minimum(o *Tensor) *Tensor { return t.binary(C.CGT_BOP_MINIMUM, o, "minimum") }
func (t *Tensor) Eq(o *Tensor) *Tensor      { return t.binary(C.CGT_BOP_EQ, o, "eq") }
func (t *Tensor) Ne(o *Tensor) *Tensor      { return t.binary(C.CGT_BOP_NE, o, "ne") }
func (t *Tensor) Lt(o *Tensor) *Tensor      { return t.binary(C.CGT_BOP_LT, o, "lt") }
func (t *Tensor) Le(o *Tensor) *Tensor      { return t.binary(C.CGT_BOP_LE, o, "le") }
func (t *Tensor) Gt(o *Tensor) *Tensor      { return t.binary(C.CGT_BOP_GT, o, "gt") }
func (t *Tensor) Ge(o *Tensor) *Tensor      { return t.binary(C.CGT_BOP_GE, o, "ge") }
func (t *Tensor) LogicalAnd(o *Tensor) *Tensor {
	return t.binary(C.CGT_BOP_LOGICAL_AND, o, "logical_and")
}
func (t *Tensor) LogicalOr(o *Tensor) *Tensor {
	return t.binary(C.CGT_BOP_LOGICAL_OR, o, "logical_or")
}
func (t *Tensor) Remainder(o *Tensor) *Tensor { return t.binary(C.CGT_BOP_REMAINDER, o, "remainder") }

// AddScaled returns t + alpha*o.
func (t *Tensor) AddScaled(o *Tensor, alpha float64) *Tensor {
	var out C.cgt_tensor
	must("add", C.cgt_add_scaled(t.handle("add"), o.handle("add"), C.double(alpha), &out))
	return newTensor(out, pick(t, o))
}

// In-place binary functions: t = t op o.

func (t *Tensor) Add_(o *Tensor) *Tensor { return t.binaryInPlace(C.CGT_BOP_ADD, o, "add_") }
func (t *Tensor) Sub_(o *Tensor) *Tensor { return t.binaryInPlace(C.CGT_BOP_SUB, o, "sub_") }
func (t *Tensor) Mul_(o *Tensor) *Tensor { return t.binaryInPlace(C.CGT_BOP_MUL, o, "mul_") }
func (t *Tensor) Div_(o *Tensor) *Tensor { return t.binaryInPlace(C.CGT_BOP_DIV, o, "div_") }

// AddScaled_ does t += alpha*o in place.
func (t *Tensor) AddScaled_(o *Tensor, alpha float64) *Tensor {
	must("add_", C.cgt_add_scaled_(t.handle("add_"), o.handle("add_"), C.double(alpha)))
	return t
}

// Copy_ copies src into t (broadcasting, converting dtype and device).
func (t *Tensor) Copy_(src *Tensor) *Tensor {
	must("copy_", C.cgt_copy_(t.handle("copy_"), src.handle("copy_")))
	return t
}

// Fill_ sets every element to v.
func (t *Tensor) Fill_(v float64) *Tensor {
	must("fill_", C.cgt_fill_(t.handle("fill_"), C.double(v)))
	return t
}

// Zero_ sets every element to zero.
func (t *Tensor) Zero_() *Tensor {
	must("zero_", C.cgt_zero_(t.handle("zero_")))
	return t
}

// Scalar arithmetic.

func (t *Tensor) AddScalar(v float64) *Tensor { return t.scalarOp(C.CGT_BOP_ADD, v, false, "add") }
func (t *Tensor) SubScalar(v float64) *Tensor { return t.scalarOp(C.CGT_BOP_SUB, v, false, "sub") }
func (t *Tensor) MulScalar(v float64) *Tensor { return t.scalarOp(C.CGT_BOP_MUL, v, false, "mul") }
func (t *Tensor) DivScalar(v float64) *Tensor { return t.scalarOp(C.CGT_BOP_DIV, v, false, "div") }
func (t *Tensor) PowScalar(v float64) *Tensor { return t.scalarOp(C.CGT_BOP_POW, v, false, "pow") }
func (t *Tensor) EqScalar(v float64) *Tensor  { return t.scalarOp(C.CGT_BOP_EQ, v, false, "eq") }
func (t *Tensor) LtScalar(v float64) *Tensor  { return t.scalarOp(C.CGT_BOP_LT, v, false, "lt") }
func (t *Tensor) GtScalar(v float64) *Tensor  { return t.scalarOp(C.CGT_BOP_GT, v, false, "gt") }
func (t *Tensor) GeScalar(v float64) *Tensor  { return t.scalarOp(C.CGT_BOP_GE, v, false, "ge") }
func (t *Tensor) LeScalar(v float64) *Tensor  { return t.scalarOp(C.CGT_BOP_LE, v, false, "le") }

// RSub returns v - t.
func (t *Tensor) RSub(v float64) *Tensor { return t.scalarOp(C.CGT_BOP_SUB, v, true, "rsub") }

// RDiv returns v / t.
func (t *Tensor) RDiv(v float64) *Tensor { return t.scalarOp(C.CGT_BOP_DIV, v, true, "rdiv") }

func (t *Tensor) AddScalar_(v float64) *Tensor { return t.scalarInPlace(C.CGT_BOP_ADD, v, "add_") }
func (t *Tensor) SubScalar_(v float64) *Tensor { return t.scalarInPlace(C.CGT_BOP_SUB, v, "sub_") }
func (t *Tensor) MulScalar_(v float64) *Tensor { return t.scalarInPlace(C.CGT_BOP_MUL, v, "mul_") }
func (t *Tensor) DivScalar_(v float64) *Tensor { return t.scalarInPlace(C.CGT_BOP_DIV, v, "div_") }
func (t *Tensor) PowScalar_(v float64) *Tensor { return t.scalarInPlace(C.CGT_BOP_POW, v, "pow_") }

func (t *Tensor) clamp(lo, hi float64, hasLo, hasHi bool) *Tensor {
	var out C.cgt_tensor
	must("clamp", C.cgt_clamp(t.handle("clamp"), C.double(lo), cbool(hasLo), C.double(hi), cbool(hasHi), &out))
	return newTensor(out, t.scope)
}

// Clamp limits t to [lo, hi].
func (t *Tensor) Clamp(lo, hi float64) *Tensor { return t.clamp(lo, hi, true, true) }

// ClampMin limits t from below.
func (t *Tensor) ClampMin(lo float64) *Tensor { return t.clamp(lo, 0, true, false) }

// ClampMax limits t from above.
func (t *Tensor) ClampMax(hi float64) *Tensor { return t.clamp(0, hi, false, true) }

// Clamp_ limits t to [lo, hi] in place.
func (t *Tensor) Clamp_(lo, hi float64) *Tensor {
	must("clamp_", C.cgt_clamp_(t.handle("clamp_"), C.double(lo), 1, C.double(hi), 1))
	return t
}

// Where returns a where cond is true, b elsewhere.
func Where(cond, a, b *Tensor) *Tensor {
	var out C.cgt_tensor
	must("where", C.cgt_where(cond.handle("where"), a.handle("where"), b.handle("where"), &out))
	return newTensor(out, pick(cond, a, b))
}

func cbool(b bool) C.int32_t {
	if b {
		return 1
	}
	return 0
}

// ----------------------------------------------------------- reductions

func (t *Tensor) reduce(op C.int32_t, name string, keep bool, dims []int64) *Tensor {
	var out C.cgt_tensor
	dp, nd := shapePtr(dims)
	must(name, C.cgt_reduce(op, t.handle(name), dp, nd, cbool(keep), &out))
	return newTensor(out, t.scope)
}

// Sum over all elements (0-dim result).
func (t *Tensor) Sum() *Tensor { return t.reduce(C.CGT_RED_SUM, "sum", false, nil) }

// Mean over all elements (0-dim result).
func (t *Tensor) Mean() *Tensor { return t.reduce(C.CGT_RED_MEAN, "mean", false, nil) }

// Max over all elements (0-dim result).
func (t *Tensor) Max() *Tensor { return t.reduce(C.CGT_RED_AMAX, "amax", false, nil) }

// Min over all elements (0-dim result).
func (t *Tensor) Min() *Tensor { return t.reduce(C.CGT_RED_AMIN, "amin", false, nil) }

// Norm is the L2 norm of all elements (0-dim result).
func (t *Tensor) Norm() *Tensor { return t.reduce(C.CGT_RED_NORM2, "norm", false, nil) }

// All reports (as a 0-dim bool tensor) whether every element is true.
func (t *Tensor) All() *Tensor { return t.reduce(C.CGT_RED_ALL, "all", false, nil) }

// Any reports (as a 0-dim bool tensor) whether some element is true.
func (t *Tensor) Any() *Tensor { return t.reduce(C.CGT_RED_ANY, "any", false, nil) }

// SumDims sums over dims, keeping them as size 1 if keep.
func (t *Tensor) SumDims(keep bool, dims ...int64) *Tensor {
	return t.reduce(C.CGT_RED_SUM, "sum", keep, dims)
}

// MeanDims averages over dims.
func (t *Tensor) MeanDims(keep bool, dims ...int64) *Tensor {
	return t.reduce(C.CGT_RED_MEAN, "mean", keep, dims)
}

// MaxDims takes the maximum over dims (amax).
func (t *Tensor) MaxDims(keep bool, dims ...int64) *Tensor {
	return t.reduce(C.CGT_RED_AMAX, "amax", keep, dims)
}

// MinDims takes the minimum over dims (amin).
func (t *Tensor) MinDims(keep bool, dims ...int64) *Tensor {
	return t.reduce(C.CGT_RED_AMIN, "amin", keep, dims)
}

// Var is the variance over dims (unbiased: N-1) or, with no dims, over all elements.
func (t *Tensor) Var(keep bool, dims ...int64) *Tensor {
	return t.reduce(C.CGT_RED_VAR, "var", keep, dims)
}

// VarBiased is the population variance (divisor N).
func (t *Tensor) VarBiased(keep bool, dims ...int64) *Tensor {
	return t.reduce(C.CGT_RED_VAR_BIASED, "var", keep, dims)
}

// NormDims is the L2 norm over dims.
func (t *Tensor) NormDims(keep bool, dims ...int64) *Tensor {
	return t.reduce(C.CGT_RED_NORM2, "norm", keep, dims)
}

// MaxDim returns the maximum values over dim and their int64 indices.
func (t *Tensor) MaxDim(dim int64, keep bool) (values, indices *Tensor) {
	var v, i C.cgt_tensor
	must("max", C.cgt_max_dim(t.handle("max"), C.int64_t(dim), cbool(keep), &v, &i))
	return newTensor(v, t.scope), newTensor(i, t.scope)
}

// Argmax returns the int64 index of the maximum over dim.
func (t *Tensor) Argmax(dim int64, keep bool) *Tensor {
	var out C.cgt_tensor
	must("argmax", C.cgt_argmax(t.handle("argmax"), C.int64_t(dim), cbool(keep), &out))
	return newTensor(out, t.scope)
}

// Cumsum returns the cumulative sum over dim.
func (t *Tensor) Cumsum(dim int64) *Tensor {
	var out C.cgt_tensor
	must("cumsum", C.cgt_cumsum(t.handle("cumsum"), C.int64_t(dim), &out))
	return newTensor(out, t.scope)
}

// ------------------------------------------------------ shape and index

// View returns a view with a new shape (one dim may be -1); no copy.
func (t *Tensor) View(shape ...int64) *Tensor {
	var out C.cgt_tensor
	sp, nd := shapePtr(shape)
	must("view", C.cgt_view(t.handle("view"), sp, nd, &out))
	return newTensor(out, t.scope)
}

// Reshape returns t with a new shape, copying only if needed.
func (t *Tensor) Reshape(shape ...int64) *Tensor {
	var out C.cgt_tensor
	sp, nd := shapePtr(shape)
	must("reshape", C.cgt_reshape(t.handle("reshape"), sp, nd, &out))
	return newTensor(out, t.scope)
}

// Expand broadcasts size-1 dims to shape (a view).
func (t *Tensor) Expand(shape ...int64) *Tensor {
	var out C.cgt_tensor
	sp, nd := shapePtr(shape)
	must("expand", C.cgt_expand(t.handle("expand"), sp, nd, &out))
	return newTensor(out, t.scope)
}

// Permute reorders dims (a view).
func (t *Tensor) Permute(dims ...int64) *Tensor {
	var out C.cgt_tensor
	sp, nd := shapePtr(dims)
	must("permute", C.cgt_permute(t.handle("permute"), sp, nd, &out))
	return newTensor(out, t.scope)
}

// Unsqueeze inserts a size-1 dim at d.
func (t *Tensor) Unsqueeze(d int64) *Tensor {
	var out C.cgt_tensor
	must("unsqueeze", C.cgt_unsqueeze(t.handle("unsqueeze"), C.int64_t(d), &out))
	return newTensor(out, t.scope)
}

// Squeeze removes dim d if it has size 1.
func (t *Tensor) Squeeze(d int64) *Tensor {
	var out C.cgt_tensor
	must("squeeze", C.cgt_squeeze(t.handle("squeeze"), C.int64_t(d), 0, &out))
	return newTensor(out, t.scope)
}

// SqueezeAll removes every size-1 dim.
func (t *Tensor) SqueezeAll() *Tensor {
	var out C.cgt_tensor
	must("squeeze", C.cgt_squeeze(t.handle("squeeze"), 0, 1, &out))
	return newTensor(out, t.scope)
}

// Transpose swaps dims d0 and d1 (a view).
func (t *Tensor) Transpose(d0, d1 int64) *Tensor {
	var out C.cgt_tensor
	must("transpose", C.cgt_transpose(t.handle("transpose"), C.int64_t(d0), C.int64_t(d1), &out))
	return newTensor(out, t.scope)
}

// T transposes a 2-D tensor.
func (t *Tensor) T() *Tensor { return t.Transpose(0, 1) }

// Narrow returns the slice [start, start+length) of dim (a view).
func (t *Tensor) Narrow(dim, start, length int64) *Tensor {
	var out C.cgt_tensor
	must("narrow", C.cgt_narrow(t.handle("narrow"), C.int64_t(dim), C.int64_t(start), C.int64_t(length), &out))
	return newTensor(out, t.scope)
}

// IndexSelect gathers the rows of dim named by the int64 index tensor.
func (t *Tensor) IndexSelect(dim int64, index *Tensor) *Tensor {
	var out C.cgt_tensor
	must("index_select", C.cgt_index_select(t.handle("index_select"), C.int64_t(dim), index.handle("index_select"), &out))
	return newTensor(out, pick(t, index))
}

// Gather picks t[..., index[...], ...] along dim (torch.gather).
func (t *Tensor) Gather(dim int64, index *Tensor) *Tensor {
	var out C.cgt_tensor
	must("gather", C.cgt_gather(t.handle("gather"), C.int64_t(dim), index.handle("gather"), &out))
	return newTensor(out, pick(t, index))
}

// IndexAdd_ adds src's slices into t at the positions index names along dim.
func (t *Tensor) IndexAdd_(dim int64, index, src *Tensor) *Tensor {
	must("index_add_", C.cgt_index_add_(t.handle("index_add_"), C.int64_t(dim), index.handle("index_add_"), src.handle("index_add_")))
	return t
}

// IndexCopy_ copies src's slices into t at the positions index names along dim.
func (t *Tensor) IndexCopy_(dim int64, index, src *Tensor) *Tensor {
	must("index_copy_", C.cgt_index_copy_(t.handle("index_copy_"), C.int64_t(dim), index.handle("index_copy_"), src.handle("index_copy_")))
	return t
}

func handles(op string, ts []*Tensor) []C.cgt_tensor {
	hs := make([]C.cgt_tensor, len(ts))
	for i, t := range ts {
		hs[i] = t.handle(op)
	}
	return hs
}

func listPtr(hs []C.cgt_tensor) *C.cgt_tensor {
	if len(hs) == 0 {
		return nil
	}
	return (*C.cgt_tensor)(unsafe.Pointer(&hs[0]))
}

// Cat concatenates tensors along dim.
func Cat(ts []*Tensor, dim int64) *Tensor {
	hs := handles("cat", ts)
	var out C.cgt_tensor
	must("cat", C.cgt_cat(listPtr(hs), C.int32_t(len(hs)), C.int64_t(dim), &out))
	return newTensor(out, pick(ts...))
}

// Stack stacks tensors along a new dim.
func Stack(ts []*Tensor, dim int64) *Tensor {
	hs := handles("stack", ts)
	var out C.cgt_tensor
	must("stack", C.cgt_stack(listPtr(hs), C.int32_t(len(hs)), C.int64_t(dim), &out))
	return newTensor(out, pick(ts...))
}

// Contiguous returns t laid out densely (a new handle; a copy only if needed).
func (t *Tensor) Contiguous() *Tensor {
	var out C.cgt_tensor
	must("contiguous", C.cgt_contiguous(t.handle("contiguous"), &out))
	return newTensor(out, t.scope)
}

// Clone returns a copy of t (autograd-tracked).
func (t *Tensor) Clone() *Tensor {
	var out C.cgt_tensor
	must("clone", C.cgt_clone(t.handle("clone"), &out))
	return newTensor(out, t.scope)
}

// Alias returns a second handle to the same tensor, owned by s (nil:
// unowned). Freeing one handle leaves the other valid.
func (t *Tensor) Alias(s *Scope) *Tensor {
	var out C.cgt_tensor
	must("alias", C.cgt_alias(t.handle("alias"), &out))
	return newTensor(out, s)
}

// To converts t to dev and dtype (0 keeps the dtype).
func (t *Tensor) To(dev Device, dt DType) *Tensor {
	var out C.cgt_tensor
	must("to", C.cgt_to(t.handle("to"), dev.c(), C.int32_t(dt), &out))
	return newTensor(out, t.scope)
}

// ToDType converts t's dtype, keeping its device.
func (t *Tensor) ToDType(dt DType) *Tensor { return t.To(t.Device(), dt) }

// ------------------------------------------------------------- nn ops

// Linear returns x·wᵀ + b for x [..., in], w [out, in], b [out] (b may be nil).
func (t *Tensor) Linear(w, b *Tensor) *Tensor {
	var out C.cgt_tensor
	must("linear", C.cgt_linear(t.handle("linear"), w.handle("linear"), optHandle(b, "linear"), &out))
	return newTensor(out, pick(t, w, b))
}

// MatMul is torch.matmul.
func (t *Tensor) MatMul(o *Tensor) *Tensor {
	var out C.cgt_tensor
	must("matmul", C.cgt_matmul(t.handle("matmul"), o.handle("matmul"), &out))
	return newTensor(out, pick(t, o))
}

// LayerNorm normalises over the trailing dims given by shape; w and b may be nil.
func (t *Tensor) LayerNorm(shape []int64, w, b *Tensor, eps float64) *Tensor {
	var out C.cgt_tensor
	sp, nd := shapePtr(shape)
	must("layer_norm", C.cgt_layer_norm(t.handle("layer_norm"), sp, nd, optHandle(w, "layer_norm"), optHandle(b, "layer_norm"), C.double(eps), &out))
	return newTensor(out, pick(t, w, b))
}

// BatchNorm normalises over dim 1 of [N,C] or [N,C,L]. In training it uses
// the batch statistics (biased variance) and updates the running buffers in
// place with momentum (when given); in eval it uses the running buffers.
// w, b, runningMean, runningVar may be nil (the latter two not in eval).
func (t *Tensor) BatchNorm(w, b, runningMean, runningVar *Tensor, training bool, momentum, eps float64) *Tensor {
	var out C.cgt_tensor
	must("batch_norm", C.cgt_batch_norm(t.handle("batch_norm"), optHandle(w, "batch_norm"), optHandle(b, "batch_norm"),
		optHandle(runningMean, "batch_norm"), optHandle(runningVar, "batch_norm"), cbool(training), C.double(momentum), C.double(eps), &out))
	return newTensor(out, pick(t, w, b))
}

// PReLU applies max(0,x) + w·min(0,x) with w of size 1 or C.
func (t *Tensor) PReLU(w *Tensor) *Tensor {
	var out C.cgt_tensor
	must("prelu", C.cgt_prelu(t.handle("prelu"), w.handle("prelu"), &out))
	return newTensor(out, pick(t, w))
}

// Softmax over dim.
func (t *Tensor) Softmax(dim int64) *Tensor {
	var out C.cgt_tensor
	must("softmax", C.cgt_softmax(t.handle("softmax"), C.int64_t(dim), &out))
	return newTensor(out, t.scope)
}

// LogSoftmax over dim.
func (t *Tensor) LogSoftmax(dim int64) *Tensor {
	var out C.cgt_tensor
	must("log_softmax", C.cgt_log_softmax(t.handle("log_softmax"), C.int64_t(dim), &out))
	return newTensor(out, t.scope)
}

// Dropout zeroes elements with probability p when training (scaling the
// rest by 1/(1-p)), drawing from g (nil: the default generator).
func (t *Tensor) Dropout(p float64, training bool, g *Generator) *Tensor {
	var out C.cgt_tensor
	must("dropout", C.cgt_dropout(t.handle("dropout"), C.double(p), cbool(training), g.ptr(), &out))
	return newTensor(out, t.scope)
}

// Normalize divides by the Lp norm along dim, clamped below by eps (F.normalize).
func (t *Tensor) Normalize(p float64, dim int64, eps float64) *Tensor {
	var out C.cgt_tensor
	must("normalize", C.cgt_normalize(t.handle("normalize"), C.double(p), C.int64_t(dim), C.double(eps), &out))
	return newTensor(out, t.scope)
}

// Reduction selects how a loss combines its elements.
type Reduction int32

// Loss reductions.
const (
	ReduceNone Reduction = C.CGT_REDUCTION_NONE
	ReduceMean Reduction = C.CGT_REDUCTION_MEAN
	ReduceSum  Reduction = C.CGT_REDUCTION_SUM
)

// MSELoss is the squared error between t and target.
func (t *Tensor) MSELoss(target *Tensor, r Reduction) *Tensor {
	var out C.cgt_tensor
	must("mse_loss", C.cgt_mse_loss(t.handle("mse_loss"), target.handle("mse_loss"), C.int32_t(r), &out))
	return newTensor(out, pick(t, target))
}

// CrossEntropy of logits t [N,C] against int64 class targets [N].
func (t *Tensor) CrossEntropy(target *Tensor, r Reduction) *Tensor {
	var out C.cgt_tensor
	must("cross_entropy", C.cgt_cross_entropy(t.handle("cross_entropy"), target.handle("cross_entropy"), C.int32_t(r), &out))
	return newTensor(out, pick(t, target))
}

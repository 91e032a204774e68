// Batched float32 matrix products with a matrix per population member, through oneDNN.
//
// PyTorch's CPU batched products (bmm, baddbmm) call MKL, which runs its AVX2 code on CPUs that are not Intel's.
// oneDNN's matmul primitive takes a batch of weights as well as a batch of inputs and uses the CPU's full vector
// width; PyTorch routes float32 products to it only through `at::native::mkldnn_matmul`, which its Python API
// does not expose. These two operators call it for all members at once.
//
// Both accept operands that are contiguous or transposed in their last two dimensions (oneDNN reads either
// without a copy) and return a new contiguous result.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

namespace at {
namespace native {
// Defined in libtorch_cpu (aten/src/ATen/native/mkldnn/Matmul.cpp): result = alpha * mat1 @ mat2 + beta * result.
void mkldnn_matmul(const Tensor& mat1, const Tensor& mat2, const Tensor& result, float beta, float alpha);
}  // namespace native
}  // namespace at

namespace {

void check_operands(const at::Tensor& a, const at::Tensor& b, const char* name) {
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3, name, ": operands must be [members, rows, inner] and "
              "[members, inner, columns]; got ", a.sizes(), " and ", b.sizes());
  TORCH_CHECK(a.size(0) == b.size(0) && a.size(2) == b.size(1), name, ": shapes do not match: ", a.sizes(),
              " and ", b.sizes());
  TORCH_CHECK(a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat, name, ": float32 only");
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu(), name, ": CPU tensors only");
}

// a [M, R, K] @ b [M, K, C] -> [M, R, C]
at::Tensor member_matmul(const at::Tensor& a, const at::Tensor& b) {
  check_operands(a, b, "member_matmul");
  at::Tensor out = at::empty({a.size(0), a.size(1), b.size(2)}, a.options());
  at::native::mkldnn_matmul(a, b, out, /*beta=*/0.0f, /*alpha=*/1.0f);
  return out;
}

// x [M, B, in] @ weight [M, out, in]^T + bias [M, out] -> [M, B, out]: a linear layer per member. The bias is
// written first and the product added to it in the same oneDNN call.
at::Tensor member_linear(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  at::Tensor weight_t = weight.transpose(1, 2);
  check_operands(x, weight_t, "member_linear");
  if (!bias.has_value()) {
    return member_matmul(x, weight_t);
  }
  TORCH_CHECK(bias->dim() == 2 && bias->size(0) == weight.size(0) && bias->size(1) == weight.size(1),
              "member_linear: bias must be [members, out] = ", weight.size(0), "x", weight.size(1), "; got ",
              bias->sizes());
  TORCH_CHECK(bias->scalar_type() == at::kFloat, "member_linear: float32 only");
  at::Tensor out = bias->unsqueeze(1).expand({x.size(0), x.size(1), weight.size(1)}).contiguous();
  at::native::mkldnn_matmul(x, weight_t, out, /*beta=*/1.0f, /*alpha=*/1.0f);
  return out;
}

}  // namespace

TORCH_LIBRARY(plasticity_lab, m) {
  m.def("member_matmul(Tensor a, Tensor b) -> Tensor");
  m.def("member_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(plasticity_lab, CPU, m) {
  m.impl("member_matmul", member_matmul);
  m.impl("member_linear", member_linear);
}

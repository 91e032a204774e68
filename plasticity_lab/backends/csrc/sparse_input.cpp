// A first linear layer whose input is mostly zeros, for a matrix per population member.
//
// The gridworld's observation is mostly zeros and partly the same in every row (the border walls). These
// operators compute the layer by skipping the zeros and computing the shared part once per member. Skipping zeros
// reads whole rows of the weight's transpose, so both take and give the weight input-major: [M, in, out].
//
// Only PyTorch's public C++ API is used (at::Tensor, at::empty, at::parallel_for, TORCH_LIBRARY), so the file
// builds against any PyTorch release that has the extension API. The inner loop has three versions, chosen when the
// library loads from what the CPU supports: AVX-512, AVX2 with FMA, and portable C++. PLASTICITY_LAB_NATIVE_ISA
// (avx512, avx2 or portable) caps the choice, so that every version can be tested on a machine that has them all.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

// ---- the sparse first layer ---------------------------------------------------------------------------------

constexpr int64_t kLanes = 64;  // outputs accumulated in registers at once

// out[0:64] = (init ? init[0:64] : 0) + sum_p value[p] * rows[index[p] * stride + 0:64], in the order of p
#if defined(__x86_64__)
__attribute__((target("avx512f"))) void axpy64_avx512(const float* rows, int64_t stride, const int32_t* index,
                                                      const float* value, int64_t n, const float* init,
                                                      float* out) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  if (init != nullptr) {
    a0 = _mm512_loadu_ps(init), a1 = _mm512_loadu_ps(init + 16);
    a2 = _mm512_loadu_ps(init + 32), a3 = _mm512_loadu_ps(init + 48);
  }
  for (int64_t p = 0; p < n; ++p) {
    const float* row = rows + index[p] * stride;
    const __m512 v = _mm512_set1_ps(value[p]);
    a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(row), a0);
    a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(row + 16), a1);
    a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(row + 32), a2);
    a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(row + 48), a3);
  }
  _mm512_storeu_ps(out, a0), _mm512_storeu_ps(out + 16, a1);
  _mm512_storeu_ps(out + 32, a2), _mm512_storeu_ps(out + 48, a3);
}
__attribute__((target("avx2,fma"))) void axpy64_avx2(const float* rows, int64_t stride, const int32_t* index,
                                                    const float* value, int64_t n, const float* init, float* out) {
  __m256 a[8];
  for (int k = 0; k < 8; ++k) a[k] = init != nullptr ? _mm256_loadu_ps(init + 8 * k) : _mm256_setzero_ps();
  for (int64_t p = 0; p < n; ++p) {
    const float* row = rows + index[p] * stride;
    const __m256 v = _mm256_set1_ps(value[p]);
    for (int k = 0; k < 8; ++k) a[k] = _mm256_fmadd_ps(v, _mm256_loadu_ps(row + 8 * k), a[k]);
  }
  for (int k = 0; k < 8; ++k) _mm256_storeu_ps(out + 8 * k, a[k]);
}
#endif

// The instruction set the kernels use: 2 = AVX-512, 1 = AVX2 with FMA, 0 = portable loops. The best the CPU has,
// capped by PLASTICITY_LAB_NATIVE_ISA (read once, when the library loads).
int detect_isa() {
  int best = 0;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = 1;
  if (best == 1 && __builtin_cpu_supports("avx512f")) best = 2;
#endif
  const char* cap = std::getenv("PLASTICITY_LAB_NATIVE_ISA");
  if (cap != nullptr) {
    const std::string name(cap);
    if (name == "portable") best = 0;
    if (name == "avx2") best = std::min(best, 1);
  }
  return best;
}
const int kIsa = detect_isa();
const bool kHasAvx512 = kIsa == 2;

void axpy64_portable(const float* rows, int64_t stride, const int32_t* index, const float* value, int64_t n,
                     const float* init, float* out) {
  float acc[kLanes];
  for (int64_t k = 0; k < kLanes; ++k) acc[k] = init != nullptr ? init[k] : 0.0f;
  for (int64_t p = 0; p < n; ++p) {
    const float* row = rows + index[p] * stride;
    for (int64_t k = 0; k < kLanes; ++k) acc[k] += value[p] * row[k];  // std::fma is a library call without FMA
  }
  for (int64_t k = 0; k < kLanes; ++k) out[k] = acc[k];
}

void axpy64(const float* rows, int64_t stride, const int32_t* index, const float* value, int64_t n,
            const float* init, float* out) {
#if defined(__x86_64__)
  if (kIsa == 2) return axpy64_avx512(rows, stride, index, value, n, init, out);
  if (kIsa == 1) return axpy64_avx2(rows, stride, index, value, n, init, out);
#endif
  axpy64_portable(rows, stride, index, value, n, init, out);
}

// The input columns of one member's rows x [B, I] that hold the same non-zero value in every row: shared[j] is 1
// for those, and bit k of unshared_bits[j / 16] is 1 for every other column j = 16 (j / 16) + k.
#if defined(__x86_64__)
__attribute__((target("avx512f"))) void shared_columns_avx512(const float* x, int64_t B, int64_t I,
                                                             uint8_t* shared, uint16_t* unshared_bits) {
  for (int64_t j = 0; j < I; j += 16) {
    const __mmask16 inside = j + 16 <= I ? static_cast<__mmask16>(0xFFFF)
                                         : static_cast<__mmask16>((1u << (I - j)) - 1);
    const __m512 first = _mm512_maskz_loadu_ps(inside, x + j);
    __mmask16 same = _mm512_mask_cmp_ps_mask(inside, first, _mm512_setzero_ps(), _CMP_NEQ_UQ);
    for (int64_t b = 1; b < B && same; ++b)
      same = _mm512_mask_cmp_ps_mask(same, _mm512_maskz_loadu_ps(inside, x + b * I + j), first, _CMP_EQ_OQ);
    unshared_bits[j / 16] = static_cast<uint16_t>(~same & inside);
    for (int64_t k = 0; k < 16 && j + k < I; ++k) shared[j + k] = (same >> k) & 1u;
  }
}
#endif

void shared_columns_portable(const float* x, int64_t B, int64_t I, uint8_t* shared, uint16_t* unshared_bits) {
  for (int64_t j = 0; j < I; ++j) shared[j] = x[j] != 0.0f;
  for (int64_t b = 1; b < B; ++b) {
    const float* row = x + b * I;
    for (int64_t j = 0; j < I; ++j) shared[j] &= static_cast<uint8_t>(row[j] == x[j]);
  }
  for (int64_t j = 0; j < I; ++j) {
    if (j % 16 == 0) unshared_bits[j / 16] = 0;
    if (!shared[j]) unshared_bits[j / 16] |= static_cast<uint16_t>(1u << (j % 16));
  }
}

void shared_columns(const float* x, int64_t B, int64_t I, uint8_t* shared, uint16_t* unshared_bits) {
#if defined(__x86_64__)
  if (kHasAvx512) return shared_columns_avx512(x, B, I, shared, unshared_bits);
#endif
  shared_columns_portable(x, B, I, shared, unshared_bits);
}

// The non-zero entries of row [I] outside the shared columns, in column order: their columns and values.
#if defined(__x86_64__)
__attribute__((target("avx512f"))) int64_t nonzeros_avx512(const float* row, int64_t I, const uint16_t* unshared_bits,
                                                           int32_t* index, float* value) {
  int64_t n = 0;
  const __m512i step = _mm512_set1_epi32(16);
  __m512i columns = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int64_t j = 0; j < I; j += 16) {
    const __mmask16 inside = j + 16 <= I ? static_cast<__mmask16>(0xFFFF)
                                         : static_cast<__mmask16>((1u << (I - j)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(inside, row + j);
    const __mmask16 keep = _mm512_mask_cmp_ps_mask(inside & unshared_bits[j / 16], v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
    // compress into registers, then store whole vectors: a compressing store to memory is slow on AMD's CPUs
    _mm512_storeu_si512(index + n, _mm512_maskz_compress_epi32(keep, columns));
    _mm512_storeu_ps(value + n, _mm512_maskz_compress_ps(keep, v));
    n += __builtin_popcount(keep);
    columns = _mm512_add_epi32(columns, step);
  }
  return n;
}
#endif

int64_t nonzeros_portable(const float* row, int64_t I, const uint8_t* shared, int32_t* index, float* value) {
  int64_t n = 0;
  for (int64_t j = 0; j < I; ++j) {
    index[n] = static_cast<int32_t>(j), value[n] = row[j];
    n += row[j] != 0.0f && !shared[j];
  }
  return n;
}

// index and value need room for I + 16 entries (the vector path writes whole vectors past the last one)
int64_t nonzeros(const float* row, int64_t I, const uint8_t* shared, const uint16_t* unshared_bits, int32_t* index,
                 float* value) {
#if defined(__x86_64__)
  if (kHasAvx512) return nonzeros_avx512(row, I, unshared_bits, index, value);
#endif
  return nonzeros_portable(row, I, shared, index, value);
}

void check_sparse_operands(const at::Tensor& x, const at::Tensor& other, const char* name, const char* what) {
  TORCH_CHECK(x.dim() == 3 && other.dim() == 3, name, ": x must be [members, rows, in] and ", what,
              " 3-dimensional; got ", x.sizes(), " and ", other.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat && other.scalar_type() == at::kFloat, name, ": float32 only");
  TORCH_CHECK(x.device().is_cpu() && other.device().is_cpu(), name, ": CPU tensors only");
  TORCH_CHECK(x.size(0) == other.size(0), name, ": members do not match: ", x.sizes(), " and ", other.sizes());
}

// x [M, B, in] @ weight_t [M, in, out] + bias [M, out] -> [M, B, out], skipping the zeros of x. The columns of
// x that hold the same non-zero value in every row of a member are added to the bias once.
at::Tensor sparse_input_linear(const at::Tensor& x_, const at::Tensor& weight_t_, const c10::optional<at::Tensor>& bias_) {
  check_sparse_operands(x_, weight_t_, "sparse_input_linear", "weight_t [members, in, out]");
  const int64_t M = x_.size(0), B = x_.size(1), I = x_.size(2), O = weight_t_.size(2);
  TORCH_CHECK(weight_t_.size(1) == I, "sparse_input_linear: weight_t must be [members, in, out] with in = ", I,
              "; got ", weight_t_.sizes());
  TORCH_CHECK(O % kLanes == 0, "sparse_input_linear: outputs must be a multiple of ", kLanes, "; got ", O);
  at::Tensor bias;
  if (bias_.has_value()) {
    bias = bias_->contiguous();
    TORCH_CHECK(bias.dim() == 2 && bias.size(0) == M && bias.size(1) == O,
                "sparse_input_linear: bias must be [members, out] = ", M, "x", O, "; got ", bias.sizes());
    TORCH_CHECK(bias.scalar_type() == at::kFloat, "sparse_input_linear: float32 only");
  }
  const at::Tensor x = x_.contiguous(), weight_t = weight_t_.contiguous();
  at::Tensor out = at::empty({M, B, O}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = weight_t.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  at::parallel_for(0, M, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> shared(I);
    std::vector<uint16_t> unshared_bits((I + 15) / 16);
    std::vector<int32_t> index(I + 16);
    std::vector<float> value(I + 16), base(O);
    for (int64_t m = begin; m < end; ++m) {
      const float* xm = xp + m * B * I;
      const float* w = wp + m * I * O;
      shared_columns(xm, B, I, shared.data(), unshared_bits.data());
      int64_t n = 0;  // the shared columns, from the first row
      for (int64_t j = 0; j < I; ++j) {
        index[n] = static_cast<int32_t>(j), value[n] = xm[j];
        n += shared[j];
      }
      for (int64_t c = 0; c < O; c += kLanes)
        axpy64(w + c, O, index.data(), value.data(), n, bp != nullptr ? bp + m * O + c : nullptr, base.data() + c);
      for (int64_t b = 0; b < B; ++b) {
        n = nonzeros(xm + b * I, I, shared.data(), unshared_bits.data(), index.data(), value.data());
        float* o = op + (m * B + b) * O;
        for (int64_t c = 0; c < O; c += kLanes) axpy64(w + c, O, index.data(), value.data(), n, base.data() + c, o + c);
      }
    }
  });
  return out;
}

// x [M, B, in]^T @ grad [M, B, out] -> [M, in, out]: the weight gradient of sparse_input_linear, input-major.
at::Tensor sparse_input_weight_grad(const at::Tensor& x_, const at::Tensor& grad_) {
  check_sparse_operands(x_, grad_, "sparse_input_weight_grad", "grad [members, rows, out]");
  const int64_t M = x_.size(0), B = x_.size(1), I = x_.size(2), O = grad_.size(2);
  TORCH_CHECK(grad_.size(1) == B, "sparse_input_weight_grad: rows do not match: ", x_.sizes(), " and ", grad_.sizes());
  TORCH_CHECK(O % kLanes == 0, "sparse_input_weight_grad: outputs must be a multiple of ", kLanes, "; got ", O);
  const at::Tensor x = x_.contiguous(), grad = grad_.contiguous();
  at::Tensor out = at::empty({M, I, O}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* gp = grad.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, M, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> shared(I);
    std::vector<uint16_t> unshared_bits((I + 15) / 16);
    std::vector<int32_t> start(I + 1), filled(I), rows(B * I), all_rows(B), row_start(B + 1), index(B * I + 16);
    std::vector<float> value(B * I), row_value(B * I + 16), ones(B, 1.0f), grad_sum(O);
    for (int64_t b = 0; b < B; ++b) all_rows[b] = static_cast<int32_t>(b);
    for (int64_t m = begin; m < end; ++m) {
      const float* xm = xp + m * B * I;
      const float* g = gp + m * B * O;
      float* d = op + m * I * O;
      shared_columns(xm, B, I, shared.data(), unshared_bits.data());
      // each row's non-zeros (shared columns left out), then regrouped column by column, rows in order
      row_start[0] = 0;
      for (int64_t b = 0; b < B; ++b)
        row_start[b + 1] = row_start[b] + static_cast<int32_t>(
            nonzeros(xm + b * I, I, shared.data(), unshared_bits.data(), index.data() + row_start[b],
                     row_value.data() + row_start[b]));
      std::fill(filled.begin(), filled.end(), 0);
      for (int32_t p = 0; p < row_start[B]; ++p) ++filled[index[p]];
      start[0] = 0;
      for (int64_t j = 0; j < I; ++j) start[j + 1] = start[j] + filled[j];
      std::fill(filled.begin(), filled.end(), 0);
      for (int64_t b = 0; b < B; ++b)
        for (int32_t p = row_start[b]; p < row_start[b + 1]; ++p) {
          const int32_t q = start[index[p]] + filled[index[p]]++;
          rows[q] = static_cast<int32_t>(b), value[q] = row_value[p];
        }
      bool any_shared = false;
      for (int64_t j = 0; j < I; ++j) any_shared |= shared[j] != 0;
      if (any_shared)
        for (int64_t c = 0; c < O; c += kLanes)
          axpy64(g + c, O, all_rows.data(), ones.data(), B, nullptr, grad_sum.data() + c);
      for (int64_t j = 0; j < I; ++j) {
        float* dj = d + j * O;
        if (shared[j]) {
          const float v = xm[j];
          for (int64_t k = 0; k < O; ++k) dj[k] = v * grad_sum[k];
        } else {
          for (int64_t c = 0; c < O; c += kLanes)
            axpy64(g + c, O, rows.data() + start[j], value.data() + start[j], start[j + 1] - start[j], nullptr, dj + c);
        }
      }
    }
  });
  return out;
}

// The instruction set the kernels run: "avx512", "avx2" or "portable".
std::string sparse_kernels_isa() { return kIsa == 2 ? "avx512" : kIsa == 1 ? "avx2" : "portable"; }

}  // namespace

TORCH_LIBRARY(plasticity_lab, m) {
  m.def("sparse_input_linear(Tensor x, Tensor weight_t, Tensor? bias) -> Tensor");
  m.def("sparse_input_weight_grad(Tensor x, Tensor grad) -> Tensor");
  m.def("sparse_kernels_isa() -> str", sparse_kernels_isa);
}

TORCH_LIBRARY_IMPL(plasticity_lab, CPU, m) {
  m.impl("sparse_input_linear", sparse_input_linear);
  m.impl("sparse_input_weight_grad", sparse_input_weight_grad);
}

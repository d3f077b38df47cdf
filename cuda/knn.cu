// Exact kNN on the GPU: fp32 similarity tiles (a shared-memory tiled GEMM), then one
// thread per row merges its tile row into its top-k heap (aas::topk, the same code
// the CPU runs), then one thread per row sorts its heap into the output.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <stdexcept>
#include <string>
#include <type_traits>

#include "aas/gemm_tile.hpp"
#include "aas/knn_exec.hpp"
#include "aas/lp_tile.hpp"
#include "aas/topk.hpp"
#include "exec_cuda.cuh"
#include "knn_cuda.hpp"

namespace aas {
namespace cuda {
namespace {

constexpr auto& check = exec::cuda_check;  // the one CUDA error check (exec_cuda.cuh)

constexpr int kMinBlock = 16;  // tiles are block x block; block a multiple of 16

// C (rows, cols) = A[0 : rows] . B[0 : cols]^T in fp32: the register-blocked steps of
// aas/gemm_tile.hpp between barriers (each element is knnx::dot_fma's value).
__global__ void __launch_bounds__(gemm::kThreads)
    similarity_tile(const float* A, index_t rows, const float* B, index_t cols, index_t d,
                    float* C) {
  __shared__ gemm::Slices slices;
  const int tid = static_cast<int>(threadIdx.x);
  const index_t row0 = static_cast<index_t>(blockIdx.y) * gemm::kBM;
  const index_t col0 = static_cast<index_t>(blockIdx.x) * gemm::kBN;
  float acc[gemm::kTM][gemm::kTN] = {};
  for (index_t k0 = 0; k0 < d; k0 += gemm::kBK) {
    gemm::load_slices(tid, A, rows, B, cols, d, row0, col0, k0, slices);
    __syncthreads();
    gemm::accumulate(tid, slices, gemm::slice_width(k0, d), acc);
    __syncthreads();
  }
  gemm::store(tid, acc, rows, cols, row0, col0, C);
}

void launch_similarity(const float* A, index_t rows, const float* B, index_t cols, index_t d,
                       float* C) {
  const dim3 grid(static_cast<unsigned>((cols + gemm::kBN - 1) / gemm::kBN),
                  static_cast<unsigned>((rows + gemm::kBM - 1) / gemm::kBM));
  similarity_tile<<<grid, gemm::kThreads>>>(A, rows, B, cols, d, C);
  check(cudaGetLastError(), "similarity_tile");
}

// One warp per tile row: the lanes read 32 consecutive similarities (coalesced) and vote
// on the heap's floor; a chunk with a candidate goes to lane 0, which offers it through
// topk::offer_row (the CPU's code). Offering the row in chunks is offering it in order.
__global__ void merge_rows(const float* C, index_t rows, index_t cols, index_t r0,
                           const index_t* ids, index_t c0, float* heap_s, index_t* heap_i,
                           index_t* heap_n, index_t cap) {
  constexpr unsigned kAll = 0xffffffffu;
  const index_t w = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x & 31u);
  if (w >= rows) return;  // the whole warp: w is the same for its 32 lanes
  const index_t row = ids != nullptr ? ids[w] : r0 + w;
  topk::RowHeap h{heap_s + row * cap, heap_i + row * cap, heap_n + row, cap};
  index_t self = row - c0;  // a row is never its own candidate
  if (self < 0 || self >= cols) self = -1;
  float fl = __shfl_sync(kAll, lane == 0 ? h.floor() : 0.0f, 0);
  float chunk[32];
  const float* t = C + w * cols;
  for (index_t base = 0; base < cols; base += 32) {
    const index_t c = base + lane;
    const float v = c < cols ? t[c] : -INFINITY;
    const bool pass = c < cols && c != self && (v < -1.0f ? -1.0f : v) >= fl;  // as offer_row
    if (__ballot_sync(kAll, pass) == 0u) continue;
    for (int j = 0; j < 32; ++j) {
      const float vj = __shfl_sync(kAll, v, j);
      if (lane == 0) chunk[j] = vj;
    }
    if (lane == 0) {
      const index_t n = cols - base < 32 ? cols - base : 32;
      const index_t skip = (self >= base && self < base + n) ? self - base : -1;
      topk::offer_row(h, chunk, n, c0 + base, skip);
      fl = h.floor();
    }
    fl = __shfl_sync(kAll, fl, 0);
  }
}

void launch_merge(const float* C, index_t rows, index_t cols, index_t r0, const index_t* ids,
                  index_t c0, float* hs, index_t* hi, index_t* hn, index_t cap) {
  merge_rows<<<static_cast<unsigned>((rows * 32 + 127) / 128), 128>>>(C, rows, cols, r0, ids, c0,
                                                                      hs, hi, hn, cap);
  check(cudaGetLastError(), "merge_rows");
}

// Rows of X rounded to `bits` bits (knnx::round_to_bits), zero-padded to (n16, d16):
// the tensor cores' inputs, bf16 (bits 8) or tf32 held in floats (bits 11).
template <class T>
__global__ void round_rows(const float* X, index_t n, index_t d, index_t n16, index_t d16,
                           int bits, T* out) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t t = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < n16 * d16;
       t += stride) {
    const index_t i = t / d16, e = t % d16;
    const float v = (i < n && e < d) ? knnx::round_to_bits(X[i * d + e], bits) : 0.0f;
    if constexpr (std::is_same<T, __nv_bfloat16>::value)
      out[t] = __float2bfloat16_rn(v);  // exact: v already has bf16's 8 bits
    else
      out[t] = v;
  }
}

// The fragment operations of aas/lp_tile.hpp on the tensor cores (sm_80+): bf16
// (m16n16k16) or tf32 (m16n16k8; Xr's floats already hold tf32's 11 bits, so the
// tensor cores' truncation of the low bits changes nothing).
template <class T>
struct WmmaOps {
  static constexpr bool kBf16 = std::is_same<T, __nv_bfloat16>::value;
  static constexpr int kK = kBf16 ? 16 : 8;
  using In = typename std::conditional<kBf16, __nv_bfloat16, nvcuda::wmma::precision::tf32>::type;
  using A = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, kK, In, nvcuda::wmma::row_major>;
  using B = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, kK, In, nvcuda::wmma::col_major>;
  using Acc = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, kK, float>;
  __device__ static void zero(Acc& c) { nvcuda::wmma::fill_fragment(c, 0.0f); }
  __device__ static void load_a(A& a, const T* p, int ld) {
    nvcuda::wmma::load_matrix_sync(a, p, static_cast<unsigned>(ld));
  }
  __device__ static void load_b(B& b, const T* p, int ld) {
    nvcuda::wmma::load_matrix_sync(b, p, static_cast<unsigned>(ld));
  }
  __device__ static void mma(Acc& c, const A& a, const B& b) { nvcuda::wmma::mma_sync(c, a, b, c); }
  __device__ static void store(float* p, const Acc& c, index_t ld) {
    nvcuda::wmma::store_matrix_sync(p, c, static_cast<unsigned>(ld), nvcuda::wmma::mem_row_major);
  }
};

// C (whole 128 x 128 blocks, leading dimension ldc) = Xr[r0 ..] . Xr[c0 ..]^T: the steps of
// aas/lp_tile.hpp between barriers (the CPU tests run the same steps with host fragments).
template <class T>
__global__ void __launch_bounds__(lp::kThreads)
    low_precision_tile(const T* Xr, index_t n16, index_t d16, index_t r0, index_t c0, float* C,
                       index_t ldc) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using Ops = WmmaOps<T>;
  __shared__ lp::Slices<T> slices;
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32;
  const index_t row0 = r0 + static_cast<index_t>(blockIdx.y) * lp::kBM;
  const index_t col0 = c0 + static_cast<index_t>(blockIdx.x) * lp::kBN;
  typename Ops::Acc acc[lp::kFragRows][lp::kFragCols];
  for (auto& row : acc)
    for (auto& c : row) Ops::zero(c);
  for (index_t k0 = 0; k0 < d16; k0 += lp::kBK) {
    lp::load_slices(tid, Xr, n16, d16, row0, col0, k0, slices);
    __syncthreads();
    lp::accumulate<Ops>(warp, slices, acc);
    __syncthreads();
  }
  lp::store<Ops>(warp, acc,
                 C + static_cast<index_t>(blockIdx.y) * lp::kBM * ldc +
                     static_cast<index_t>(blockIdx.x) * lp::kBN,
                 ldc);
#endif
}

// The valid (rows, cols) corner of a tile with leading dimension ldc, compacted to
// (rows, cols) for merge_rows.
__global__ void compact_tile(const float* C, index_t ldc, index_t rows, index_t cols, float* out) {
  const index_t t = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t < rows * cols) out[t] = C[(t / cols) * ldc + t % cols];
}


struct ClearSizes {
  const index_t* ids;
  index_t* size;
  __device__ void operator()(index_t r) const { size[ids[r]] = 0; }
};

struct GatherRows {
  const float* X;
  index_t d;
  const index_t* ids;
  float* out;
  __device__ void operator()(index_t t) const { out[t] = X[ids[t / d] * d + t % d]; }
};

index_t round16(index_t v) { return (v + 15) / 16 * 16; }

// The exact (fp32 tile) heaps of m rows: ids (device) lists them, or null for rows
// 0 .. m-1. Each row's heap is cleared first.
void exact_heaps(const float* dX, index_t n, index_t d, const index_t* ids, index_t m, float* hs,
                 index_t* hi, index_t* hn, index_t cap, index_t block) {
  const exec::Cuda ex;
  if (ids == nullptr)
    check(cudaMemset(hn, 0, sizeof(index_t) * m), "clear heaps");
  else
    ex.for_each(m, ClearSizes{ids, hn});
  exec::DeviceMemory<float> tile(block * block), gathered(ids != nullptr ? block * d : 1);
  for (index_t r0 = 0; r0 < m; r0 += block) {
    const index_t rows = (m - r0 < block) ? m - r0 : block;
    const float* A = dX + r0 * d;
    if (ids != nullptr) {
      ex.for_each(rows * d, GatherRows{dX, d, ids + r0, gathered.p});
      A = gathered.p;
    }
    for (index_t c0 = 0; c0 < n; c0 += block) {
      const index_t cols = (n - c0 < block) ? n - c0 : block;
      launch_similarity(A, rows, dX + c0 * d, cols, d, tile.p);
      launch_merge(tile.p, rows, cols, r0, ids != nullptr ? ids + r0 : nullptr, c0, hs, hi, hn,
                   cap);
    }
  }
}

// Every row's top-cap candidates by the low-precision similarity (tensor cores).
template <class T>
void candidate_heaps(const float* dX, index_t n, index_t d, int bits, float* hs, index_t* hi,
                     index_t* hn, index_t cap, index_t block) {
  const index_t n16 = round16(n), d16 = round16(d);
  exec::DeviceMemory<T> Xr(n16 * d16);
  round_rows<T><<<1024, 256>>>(dX, n, d, n16, d16, bits, Xr.p);
  check(cudaGetLastError(), "round_rows");
  check(cudaMemset(hn, 0, sizeof(index_t) * n), "clear heaps");
  const index_t whole = (block + lp::kBM - 1) / lp::kBM * lp::kBM;  // kBM == kBN
  exec::DeviceMemory<float> wide(whole * whole), tile(block * block);
  for (index_t r0 = 0; r0 < n; r0 += block) {
    const index_t rows = (n - r0 < block) ? n - r0 : block;
    for (index_t c0 = 0; c0 < n; c0 += block) {
      const index_t cols = (n - c0 < block) ? n - c0 : block;
      const index_t by = (rows + lp::kBM - 1) / lp::kBM, bx = (cols + lp::kBN - 1) / lp::kBN;
      const index_t ldc = bx * lp::kBN;  // whole blocks: every fragment store is in bounds
      low_precision_tile<T><<<dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by)),
                              lp::kThreads>>>(Xr.p, n16, d16, r0, c0, wide.p, ldc);
      check(cudaGetLastError(), "low_precision_tile");
      compact_tile<<<static_cast<unsigned>((rows * cols + 255) / 256), 256>>>(wide.p, ldc, rows,
                                                                           cols, tile.p);
      check(cudaGetLastError(), "compact_tile");
      launch_merge(tile.p, rows, cols, r0, nullptr, c0, hs, hi, hn, cap);
    }
  }
}

}  // namespace

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

void knn_graph_device(const float* dX, index_t n, index_t d, index_t k, bool include_self,
                      index_t* d_out_idx, float* d_out_sims, index_t block, int bits,
                      index_t cand_cap, index_t* fallback_rows) {
  const index_t cap = include_self ? k - 1 : k;
  if (n < 2 || d < 1 || k < 1 || cap > n - 1 || block < kMinBlock || block % 16 != 0)
    throw std::invalid_argument(
        "aas::cuda::knn_graph: bad sizes (need 1 <= k < n, block a multiple of 16)");
  if (bits != 8 && bits != 11 && bits != 24)
    throw std::invalid_argument("aas::cuda::knn_graph: bits must be 8 (bf16), 11 (tf32) or 24");
  if (device_count() < 1) throw std::runtime_error("CUDA: no device is available");
  const exec::Cuda ex;
  index_t fallback = 0;
  if (bits == 24) {
    exec::DeviceMemory<float> hs(n * cap);
    exec::DeviceMemory<index_t> hi(n * cap), hn(n);
    if (cap > 0)
      exact_heaps(dX, n, d, nullptr, n, hs.p, hi.p, hn.p, cap, block);
    else
      check(cudaMemset(hn.p, 0, sizeof(index_t) * n), "clear heaps");
    ex.for_each(n, knnx::Finalize{hs.p, hi.p, hn.p, cap, k, include_self, d_out_idx, d_out_sims});
  } else {
    auto candidates = [&](float* s, index_t* id, index_t* size, index_t cc) {
      if (bits == 8)
        candidate_heaps<__nv_bfloat16>(dX, n, d, bits, s, id, size, cc, block);
      else
        candidate_heaps<float>(dX, n, d, bits, s, id, size, cc, block);
    };
    auto exact_rows = [&](const index_t* rows, index_t m, float* s, index_t* id, index_t* size,
                          index_t c) { exact_heaps(dX, n, d, rows, m, s, id, size, c, block); };
    if (cand_cap <= 0) cand_cap = cap + std::max<index_t>(cap, 32);
    fallback = knn_low_precision_exec(ex, dX, n, d, k, include_self, bits, cand_cap, candidates,
                                      exact_rows, d_out_idx, d_out_sims);
  }
  check(cudaDeviceSynchronize(), "knn_graph");
  if (fallback_rows != nullptr) *fallback_rows = fallback;
}

namespace {

// The fp32 kNN with X left on the host: `resident` rows of X at a time on the device,
// every column block copied over for them (X is read n / resident times).
void knn_graph_streamed(const float* X, index_t n, index_t d, index_t k, bool include_self,
                        index_t* out_idx, float* out_sims, index_t block, index_t resident) {
  const exec::Cuda ex;
  const index_t cap = include_self ? k - 1 : k;
  exec::DeviceMemory<float> hs(n * cap), os(n * k), A(resident * d), B(block * d),
      tile(block * block);
  exec::DeviceMemory<index_t> hi(n * cap), hn(n), oi(n * k);
  check(cudaMemset(hn.p, 0, sizeof(index_t) * n), "clear heaps");
  for (index_t R0 = 0; cap > 0 && R0 < n; R0 += resident) {
    const index_t rn = std::min(resident, n - R0);
    check(cudaMemcpy(A.p, X + R0 * d, sizeof(float) * rn * d, cudaMemcpyHostToDevice), "copy X");
    for (index_t c0 = 0; c0 < n; c0 += block) {
      const index_t cols = std::min(block, n - c0);
      const float* Bp = A.p + (c0 - R0) * d;  // resident is a multiple of block
      if (c0 < R0 || c0 >= R0 + rn) {
        check(cudaMemcpy(B.p, X + c0 * d, sizeof(float) * cols * d, cudaMemcpyHostToDevice),
              "copy X");
        Bp = B.p;
      }
      for (index_t r0 = R0; r0 < R0 + rn; r0 += block) {
        const index_t rows = std::min(block, R0 + rn - r0);
        launch_similarity(A.p + (r0 - R0) * d, rows, Bp, cols, d, tile.p);
        launch_merge(tile.p, rows, cols, r0, nullptr, c0, hs.p, hi.p, hn.p, cap);
      }
    }
  }
  ex.for_each(n, knnx::Finalize{hs.p, hi.p, hn.p, cap, k, include_self, oi.p, os.p});
  check(cudaDeviceSynchronize(), "knn_graph");
  check(cudaMemcpy(out_idx, oi.p, sizeof(index_t) * n * k, cudaMemcpyDeviceToHost), "copy out");
  check(cudaMemcpy(out_sims, os.p, sizeof(float) * n * k, cudaMemcpyDeviceToHost), "copy out");
}

}  // namespace

index_t resident_rows_for(index_t n, index_t d, index_t k, index_t block, std::size_t free_bytes) {
  // what stays whatever the plan: heaps, outputs and tiles (12 bytes a slot); X gets
  // at most 60% of what is left, leaving room for the low-precision copy and thrust
  const double fixed = 12.0 * static_cast<double>(n) * (2 * k + 1) + 8.0 * block * block;
  const double room = 0.6 * (static_cast<double>(free_bytes) - fixed);
  const double row = 4.0 * static_cast<double>(d);
  if (room >= row * static_cast<double>(n)) return n;
  const index_t fit = static_cast<index_t>((room - row * block) / row) / block * block;
  if (fit < block)
    throw std::runtime_error("CUDA: not enough free device memory for the kNN heaps of " +
                             std::to_string(n) + " rows");
  return fit;
}

void knn_graph(const float* X, index_t n, index_t d, index_t k, bool include_self,
               index_t* out_idx, float* out_sims, index_t block, int bits, index_t cand_cap,
               index_t* fallback_rows, index_t resident_rows) {
  if (n < 2 || d < 1 || k < 1 || block < kMinBlock || block % 16 != 0)
    throw std::invalid_argument(
        "aas::cuda::knn_graph: bad sizes (need 1 <= k < n, block a multiple of 16)");
  if (device_count() < 1) throw std::runtime_error("CUDA: no device is available");
  if (resident_rows <= 0) {
    std::size_t free_bytes = 0, total = 0;
    check(cudaMemGetInfo(&free_bytes, &total), "cudaMemGetInfo");
    resident_rows = resident_rows_for(n, d, k, block, free_bytes);
  }
  if (resident_rows < n) {  // X does not fit: stream it, in fp32
    if (fallback_rows != nullptr) *fallback_rows = 0;
    knn_graph_streamed(X, n, d, k, include_self, out_idx, out_sims, block,
                       std::max(block, resident_rows / block * block));
    return;
  }
  exec::DeviceMemory<float> dX(n * d), os(n * k);
  exec::DeviceMemory<index_t> oi(n * k);
  check(cudaMemcpy(dX.p, X, sizeof(float) * n * d, cudaMemcpyHostToDevice), "copy X");
  knn_graph_device(dX.p, n, d, k, include_self, oi.p, os.p, block, bits, cand_cap, fallback_rows);
  check(cudaMemcpy(out_idx, oi.p, sizeof(index_t) * n * k, cudaMemcpyDeviceToHost), "copy out");
  check(cudaMemcpy(out_sims, os.p, sizeof(float) * n * k, cudaMemcpyDeviceToHost), "copy out");
}

}  // namespace cuda
}  // namespace aas

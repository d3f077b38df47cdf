// The CPU's exact kNN through a bf16 candidate search (cpp/src/knn_bf16.cpp): the steps
// of aas/knn_exec.hpp (candidates, exact fp32 re-rank, certificate, fp32 fallback) with
// the candidates' similarity tiles computed by AVX512-BF16 dot products (vdpbf16ps)
// where the CPU has them, chosen at run time; the default build stays portable.
#pragma once

#include "aas/common.hpp"
#include "aas/knn.hpp"

namespace aas {

/// The candidate kernel: AVX512-BF16 instructions; AMX tiles (TDPBF16PS); the AMX
/// kernel's steps with the instruction emulated in C++ (any CPU; slow, for tests of the
/// kernel's layout); or the bf16 arithmetic in portable C++ (any CPU; slow, for tests of
/// the steps around the kernel).
enum class Bf16Kernel { portable = 0, avx512 = 1, amx = 2, amx_emulated = 3 };

/// True when this CPU (and its OS) can run the AVX512-BF16 kernel.
bool cpu_has_avx512_bf16();

/// True when this CPU has AMX-BF16 tiles, the OS granted this process their state
/// (Linux: arch_prctl ARCH_REQ_XCOMP_PERM, asked here once) and the tile kernel agreed
/// with its C++ emulation on a fixed problem. Checked once per process.
bool cpu_amx_ready();

/// The exact kNN of the unit rows X (n, d): the top-k by aas::knnx::dot_fma, ties to the
/// smaller index (the graph knn_fp32_emulated and the CUDA fp32 kernels give), found
/// through each row's cand_cap (<= 0: the CUDA path's default) best rows by the bf16
/// similarity. A row the rounding bound does not certify gets a second chance: its best
/// 4 cand_cap rows by the bf16 similarity, re-ranked and certified the same way; the rows
/// that still fail (and every row with force_fallback, a test hook) are recomputed from
/// fp32 similarities to every row. Returns how many rows the first certificate left, -1
/// when the bound was broken (every row recomputed); full_rows (optional) receives how
/// many rows were recomputed from every row.
index_t knn_bf16_cpu(const float* X, index_t n, index_t d, index_t k, bool include_self,
                     index_t cand_cap, Bf16Kernel kernel, bool force_fallback, int n_threads,
                     index_t* out_idx, float* out_sims, index_t* full_rows = nullptr);

/// The same exact kNN from candidates found by fp32 BLAS tiles: cands holds each row's
/// best cands.cap (>= k, self excluded) rows by the BLAS similarity as knn_merge_tile
/// leaves them (heaps, root the worst). They are re-ranked by dot_fma and certified
/// with a bound on |BLAS - dot_fma| (gamma_d for any summation order, see
/// fp32_gemm_bound); uncertified rows (every row with force_fallback) are recomputed
/// from dot_fma to every row. Returns how many rows were, -1 when a candidate broke the
/// bound (every row recomputed). cands is read, not changed.
index_t knn_fp32_rerank_cpu(const float* X, index_t n, index_t d, index_t k, bool include_self,
                            TopKState cands, bool force_fallback, int n_threads, index_t* out_idx,
                            float* out_sims);

/// Tests only: C (rows, cols) = the bf16 similarities of A's rows with B's, as the
/// candidate search computes them with `kernel`.
void bf16_similarity_tile(const float* A, index_t rows, const float* B, index_t cols, index_t d,
                          Bf16Kernel kernel, float* C);

}  // namespace aas

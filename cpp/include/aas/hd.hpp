// AAS_HD marks a function that runs on the CPU and, compiled by nvcc, on the GPU too.
// The CUDA kernels in cuda/ are thin launches over such functions, so the CPU build
// and its tests exercise the same per-element arithmetic the GPU runs.
#pragma once

#if defined(__CUDACC__)
#define AAS_HD __host__ __device__ inline
#else
#define AAS_HD inline
#endif

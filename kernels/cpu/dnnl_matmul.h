// Matrix products on the CPU through oneDNN's matmul primitive (the library PyTorch uses for
// its CPU GEMMs). oneDNN picks its kernels for the CPU it runs on (AVX-512, AVX512-BF16,
// AMX). Against OpenBLAS's sgemm at the models' shapes: fp32 0.9–1.4× on an Intel Xeon
// (slower only at 2048³), 1.7–2.1× on an AMD EPYC whose OpenBLAS is held to AVX2; bf16 1.5–2× its
// fp32 with AVX512-BF16, 7–12× with AMX (docs/performance.md, issue 17).
//
// Row-major like kernels/cpu/gemm.h: C[m,n] = alpha · op(A) · op(B) + beta · C, op(X) = X or
// Xᵀ, lda/ldb/ldc row strides. A and B are fp32, or bf16 (the upper 16 bits of an fp32,
// rounded to nearest even by the caller); C is fp32 and every product accumulates in fp32.
// Primitives take their sizes and strides at run time, so one per (operand type, transposes,
// beta) is made and kept per thread; a product of any shape then costs no primitive creation.
// Deterministic for a given instruction set and thread count; a CPU with another instruction
// set may round differently (DnnlKernelInfo names what runs). Threads: SetBlasThreads
// (kernels/cpu/gemm.h) sets oneDNN's OpenMP threads too. A type oneDNN cannot multiply on this
// CPU ends the process with the message; callers of bf16 ask DnnlHasBf16 first.
#pragma once

#include <cstdint>
#include <string>

namespace moerun::kernels::cpu {

enum class GemmOperands { kF32, kBf16 };

void DnnlGemm(GemmOperands type, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
              float alpha, const void* a, int64_t lda, const void* b, int64_t ldb, float beta,
              float* c, int64_t ldc);

// "oneDNN 2.6.3, ISA avx512_core_bf16, fp32 gemm:jit, bf16 gemm:jit": the version, the
// instruction set oneDNN uses on this CPU and the implementation of each product type.
std::string DnnlKernelInfo();

// Whether oneDNN multiplies bf16 on this CPU (natively, or emulated on AVX-512).
bool DnnlHasBf16();

}  // namespace moerun::kernels::cpu

// The cudaDataType_t cuBLAS and cuBLASLt name a storage type by: float and __nv_bfloat16,
// the two storage types of the GPU path.
#pragma once

#include <cuda_bf16.h>
#include <library_types.h>

namespace moerun::kernels::cuda {

template <typename T>
constexpr cudaDataType_t DataTypeOf();
template <>
constexpr cudaDataType_t DataTypeOf<float>() {
  return CUDA_R_32F;
}
template <>
constexpr cudaDataType_t DataTypeOf<__nv_bfloat16>() {
  return CUDA_R_16BF;
}

}  // namespace moerun::kernels::cuda

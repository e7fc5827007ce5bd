// CRC32C (Castagnoli), the checksum of every checkpoint value. Table-driven, slice-by-8.
// Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moerun {

// Extends `crc` (0 to start) over `n` bytes.
uint32_t Crc32c(const void* data, std::size_t n, uint32_t crc = 0);

}  // namespace moerun

// CRC32C (Castagnoli), the checksum of every checkpoint value and memory snapshot: SSE4.2's
// crc32 instruction where the CPU has it (eight bytes per instruction), else table-driven
// slice-by-8; both give the same values (tests/unit/test_checkpoint_store.cc compares them).
// Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moerun {

// Extends `crc` (0 to start) over `n` bytes.
uint32_t Crc32c(const void* data, std::size_t n, uint32_t crc = 0);
// The table-driven version, on every CPU.
uint32_t Crc32cPortable(const void* data, std::size_t n, uint32_t crc = 0);
// Whether Crc32c uses the CPU's instruction.
bool Crc32cHardware();

}  // namespace moerun

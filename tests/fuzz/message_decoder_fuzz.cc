// Fuzz target for the control-plane message decoder: any bytes give an envelope or a reason,
// never a crash, a hang or a sanitizer report; what decodes re-encodes and decodes the same.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto e = moerun::DecodeEnvelope(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!e.ok()) return 0;
  auto again = moerun::EncodeEnvelope(e.value());
  if (!again.ok()) std::abort();
  auto back = moerun::DecodeEnvelope(again.value());
  if (!back.ok() || back->body != e->body || back->sender != e->sender) std::abort();
  return 0;
}

#include "worker/checkpoint/digest.h"

#include <sodium.h>

#include <algorithm>

namespace moerun::checkpoint {

std::string WeightsDigest(const std::vector<const Entry*>& entries) {
  std::vector<const Entry*> params;
  for (const Entry* e : entries)
    if (e->name.rfind("param/", 0) == 0) params.push_back(e);
  std::sort(params.begin(), params.end(),
            [](const Entry* a, const Entry* b) { return a->name < b->name; });
  crypto_hash_sha256_state st;
  crypto_hash_sha256_init(&st);
  for (const Entry* e : params) {
    crypto_hash_sha256_update(&st, reinterpret_cast<const unsigned char*>(e->name.data()),
                              e->name.size() + 1);
    crypto_hash_sha256_update(&st, e->bytes.data(), e->bytes.size());
  }
  unsigned char out[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&st, out);
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned char c : out) {
    s += hex[c >> 4];
    s += hex[c & 15];
  }
  return s;
}

}  // namespace moerun::checkpoint

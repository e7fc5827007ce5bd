#include "coordinator/http/request_budget.h"

#include "common/limits.h"

namespace moerun::coordinator {

void RequestBudget::Start() {
  in_headers_ = true;
  line_ = header_ = body_ = lines_ = 0;
  why_.clear();
}

bool RequestBudget::Take(const char* data, size_t n) {
  if (!why_.empty()) return false;
  size_t i = 0;
  for (; in_headers_ && i < n; ++i) {
    if (++header_ > kMaxHttpHeaderBytes) {
      why_ =
          "the request line and headers exceed " + std::to_string(kMaxHttpHeaderBytes) + " bytes";
      return false;
    }
    const char c = data[i];
    if (c == '\n') {
      // A blank line ends the headers, unless nothing came before it (RFC 9112 lets a
      // client send blank lines ahead of a request line).
      if (line_ > 0) {
        ++lines_;
      } else if (lines_ > 0) {
        in_headers_ = false;
      }
      line_ = 0;
    } else if (c != '\r' && ++line_ > kMaxHttpHeaderLineBytes) {
      why_ =
          "a request or header line exceeds " + std::to_string(kMaxHttpHeaderLineBytes) + " bytes";
      return false;
    }
  }
  body_ += n - i;
  if (body_ > kMaxHttpBodyBytes + kMaxHttpHeaderBytes) {
    why_ = "the body exceeds " + std::to_string(kMaxHttpBodyBytes) + " bytes";
    return false;
  }
  return true;
}

}  // namespace moerun::coordinator

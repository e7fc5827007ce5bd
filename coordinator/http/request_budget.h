// RequestBudget: what one HTTP request may send, counted byte by byte as the server reads it
// (coordinator/http/guarded_server.h). Until the blank line that ends the headers, no line may
// pass kMaxHttpHeaderLineBytes and all of them together kMaxHttpHeaderBytes; after it the body
// (with any chunk framing) may pass kMaxHttpBodyBytes by no more than kMaxHttpHeaderBytes of
// framing. cpp-httplib grows a request line without bound while it looks for its end, and
// skips an over-long body by reading all of it; this bound stops both at the first byte past
// the limit. Not thread-safe (one per connection).
#pragma once

#include <cstddef>
#include <string>

namespace moerun::coordinator {

class RequestBudget {
 public:
  // A new request on the connection: its headers come first.
  void Start();
  // Counts bytes about to reach the parser; false once they break a limit (then why() says
  // which, and every later call is false too).
  bool Take(const char* data, size_t n);
  const std::string& why() const { return why_; }
  bool in_headers() const { return in_headers_; }

 private:
  bool in_headers_ = true;
  size_t line_ = 0;    // bytes of the current header line, CR and LF not counted
  size_t header_ = 0;  // bytes of the request line and headers
  size_t lines_ = 0;   // non-empty lines so far
  size_t body_ = 0;
  std::string why_;
};

}  // namespace moerun::coordinator

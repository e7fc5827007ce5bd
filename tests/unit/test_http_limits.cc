// The HTTP server's limits as classes: ClientGate admits per client and in all, and gives
// places back; RequestBudget bounds header lines, headers and body as bytes arrive, and
// starts over with each request.
#include <doctest/doctest.h>

#include <string>

#include "common/limits.h"
#include "coordinator/http/client_gate.h"
#include "coordinator/http/request_budget.h"

using moerun::coordinator::ClientGate;
using moerun::coordinator::RequestBudget;
using Verdict = ClientGate::Verdict;

TEST_CASE("the client gate: per client, in all, and places given back") {
  ClientGate gate(2, 3);
  CHECK(gate.Admit("10.0.0.1") == Verdict::kAdmitted);
  CHECK(gate.Admit("10.0.0.1") == Verdict::kAdmitted);
  CHECK(gate.Admit("10.0.0.1") == Verdict::kClientFull);  // its third
  CHECK(gate.open_from("10.0.0.1") == 2);
  CHECK(gate.Admit("10.0.0.2") == Verdict::kAdmitted);
  CHECK(gate.Admit("10.0.0.3") == Verdict::kServerFull);  // the fourth in all
  CHECK(gate.open() == 3);
  gate.Release("10.0.0.1");
  CHECK(gate.Admit("10.0.0.3") == Verdict::kAdmitted);
  gate.Release("10.0.0.1");
  gate.Release("10.0.0.2");
  gate.Release("10.0.0.3");
  CHECK(gate.open() == 0);
  CHECK(gate.open_from("10.0.0.1") == 0);
  gate.Release("10.0.0.9");  // never admitted: nothing changes
  CHECK(gate.open() == 0);
}

TEST_CASE("a request's headers end at the blank line; the body is counted after it") {
  RequestBudget b;
  b.Start();
  const std::string head = "\r\nPOST /api/jobs HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
  CHECK(b.Take(head.data(), 2));  // a blank line before the request line is allowed
  CHECK(b.in_headers());
  CHECK(b.Take(head.data() + 2, head.size() - 2));
  CHECK_FALSE(b.in_headers());
  const std::string body(moerun::kMaxHttpBodyBytes, 'x');
  CHECK(b.Take(body.data(), body.size()));
  const std::string past(moerun::kMaxHttpHeaderBytes + 1, 'x');
  CHECK_FALSE(b.Take(past.data(), past.size()));
  CHECK(b.why().find("the body exceeds") == 0);
  CHECK_FALSE(b.Take("x", 1));  // refused for good

  b.Start();  // the next request on the connection
  CHECK(b.why().empty());
  CHECK(b.in_headers());
  CHECK(b.Take("GET / HTTP/1.1\n\n", 16));  // bare line feeds end headers too
  CHECK_FALSE(b.in_headers());
}

TEST_CASE("an endless request line, or endless headers, are cut at their limits") {
  RequestBudget b;
  b.Start();
  const std::string zeros(moerun::kMaxHttpHeaderLineBytes, '\0');
  CHECK(b.Take(zeros.data(), zeros.size()));
  CHECK_FALSE(b.Take(zeros.data(), 1));  // one past the line limit
  CHECK(b.why().find("a request or header line exceeds") == 0);

  b.Start();
  const std::string line = "X-Filler: " + std::string(1000, 'a') + "\r\n";
  bool refused = false;
  for (size_t sent = 0; sent <= moerun::kMaxHttpHeaderBytes + line.size() && !refused;
       sent += line.size())
    refused = !b.Take(line.data(), line.size());
  CHECK(refused);
  CHECK(b.why().find("the request line and headers exceed") == 0);
}

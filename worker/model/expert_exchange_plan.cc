#include "worker/model/expert_exchange_plan.h"

namespace moerun::model {

void PlanExpertExchange(const int64_t* send_counts, const int64_t* recv_counts, int members,
                        int64_t experts_per_rank, size_t row_bytes, ExpertExchangePlan* plan) {
  const int p = members;
  const int64_t epr = experts_per_rank;
  plan->send_bytes.assign(size_t(p), 0);
  plan->recv_bytes.assign(size_t(p), 0);
  // src_start[j]: the first received row that came from member j.
  std::vector<int64_t> src_start(size_t(p) + 1, 0);
  for (int j = 0; j < p; ++j) {
    int64_t sent = 0, got = 0;
    for (int64_t le = 0; le < epr; ++le) {
      sent += send_counts[j * epr + le];
      got += recv_counts[j * epr + le];
    }
    plan->send_bytes[size_t(j)] = size_t(sent) * row_bytes;
    plan->recv_bytes[size_t(j)] = size_t(got) * row_bytes;
    src_start[size_t(j) + 1] = src_start[size_t(j)] + got;
  }
  plan->received = src_start[size_t(p)];
  plan->perm.clear();
  plan->perm.reserve(size_t(plan->received));
  plan->local_counts.assign(size_t(epr), 0);
  for (int64_t le = 0; le < epr; ++le) {
    for (int j = 0; j < p; ++j) {
      int64_t start = src_start[size_t(j)];
      for (int64_t q = 0; q < le; ++q) start += recv_counts[j * epr + q];
      const int64_t c = recv_counts[j * epr + le];
      for (int64_t i = 0; i < c; ++i) plan->perm.push_back(int32_t(start + i));
      plan->local_counts[size_t(le)] += c;
    }
  }
}

}  // namespace moerun::model

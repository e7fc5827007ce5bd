// The cross-field rules of a job spec (docs/architecture.md §3): relations between fields that no
// single-field range can express, e.g. `parallel.expert` must divide
// `model.moe.routed_experts`. Each broken rule is reported at the first field it names; a
// rule is skipped when a field it reads already has an error (no cascades). Pure function.
#pragma once

#include "common/job_spec.h"
#include "common/spec_diagnostics.h"

namespace moerun {

void CheckJobSpecRules(const JobSpec& spec, const SourceMap& sources, DiagnosticSink* sink);

}  // namespace moerun

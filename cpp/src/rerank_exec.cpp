// The GPU algorithm of the Jaccard step (aas/jaccard_exec.hpp) run on the host, for
// the tests that hold it to the CPU code bit for bit.
#include "aas/jaccard_exec.hpp"

namespace aas {

void k_reciprocal_jaccard_emulated(const index_t* rank, const float* sims, index_t n,
                                   index_t width, const float* features, index_t d, int k1, int k2,
                                   double max_distance, index_t pair_budget, CsrF32& out) {
  k_reciprocal_jaccard_exec(exec::Host{}, rank, sims, n, width, features, d, k1, k2, max_distance,
                            pair_budget, out);
}

}  // namespace aas

#include "bindings.hpp"

namespace aas_py {
void register_rerank(py::module_&) {}
}  // namespace aas_py

#include "bindings.hpp"

namespace aas_py {
void register_finch(py::module_&) {}
}  // namespace aas_py

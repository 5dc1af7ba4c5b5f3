#include "common/config_reader.h"

namespace tessera::config_internal {

std::string Describe(const YAML::Node& node) {
  if (!node || node.IsNull()) return "(missing)";
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

absl::Status Bad(const std::string& key, const YAML::Node& value, const std::string& expected) {
  return absl::InvalidArgumentError(
      absl::StrCat("config: ", key, " = ", Describe(value), ": expected ", expected));
}

absl::Status Section(MapReader& parent, const std::string& key,
                     const std::function<absl::Status(MapReader&)>& read) {
  MapReader r(parent.Child(key), parent.KeyPath(key));
  TESSERA_RETURN_IF_ERROR(r.CheckIsMap());
  TESSERA_RETURN_IF_ERROR(read(r));
  return r.NoUnknownKeys();
}

}  // namespace tessera::config_internal

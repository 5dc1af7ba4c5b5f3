"""C++ messages and gRPC stubs from one .proto, with protoc from Debian's packages."""

def grpc_cc_codegen(name, proto):
    base = proto[:-len(".proto")]
    outs = [base + ext for ext in [".pb.h", ".pb.cc", ".grpc.pb.h", ".grpc.pb.cc"]]
    native.genrule(
        name = name + "_codegen",
        srcs = [proto],
        outs = outs,
        cmd = ("protoc --proto_path=$$(dirname $(location {p})) " +
               "--cpp_out=$(@D) --grpc_out=$(@D) " +
               "--plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin) " +
               "$(location {p})").format(p = proto),
    )
    native.cc_library(
        name = name,
        srcs = [base + ".pb.cc", base + ".grpc.pb.cc"],
        hdrs = [base + ".pb.h", base + ".grpc.pb.h"],
        include_prefix = "proto",
        visibility = ["//visibility:public"],
        deps = ["//third_party:grpc"],
    )

"""One Catch2 cc_test per source file: tessera_test(name = "dir/x_test") builds dir/x_test.cc."""

def tessera_test(name, deps = [], size = "small", tags = [], data = [], args = []):
    native.cc_test(
        name = name,
        srcs = [name + ".cc"],
        size = size,
        tags = tags,
        data = data,
        args = args,
        deps = deps + [
            "//tests:lsan_suppressions",
            "//third_party:catch2_main",
        ],
    )

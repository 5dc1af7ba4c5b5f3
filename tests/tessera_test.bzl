"""One Catch2 cc_test per source file: tessera_test(name = "dir/x_test") builds dir/x_test.cc."""

# A test's own code compiles at -O0: at -O2 a Catch2 file takes about 40% longer
# (20.7 s against 12.4 s for tests/e2e/observability_test.cc) and compiling the
# tests is 43% of a clean build. The code under test keeps the build's -O2
# (or the sanitizers' -O1).
TEST_COPTS = ["-O0"]

def tessera_test(name, deps = [], size = "small", tags = [], data = [], args = [], src = None):
    """A Catch2 test of dir/x_test.cc, or of `src` when two targets share one file."""
    native.cc_test(
        name = name,
        srcs = [src or name + ".cc"],
        copts = TEST_COPTS,
        size = size,
        tags = tags,
        data = data,
        args = args,
        deps = deps + [
            "//tests:lsan_suppressions",
            "//third_party:catch2_main",
        ],
    )

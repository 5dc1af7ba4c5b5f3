// LeakSanitizer suppressions for the sanitizer runs (--config=asan), compiled
// into every test: memory that Debian's gRPC and its DNS resolver (c-ares)
// keep for the life of the process by design. Not Tessera's; anything else
// leaking still fails the test. (A suppressions file would need an absolute
// path, which differs per checkout.)
extern "C" const char* __lsan_default_suppressions() {
  return "leak:libgpr.so\n"
         "leak:libgrpc.so\n"
         "leak:libgrpc++.so\n"
         "leak:libcares.so\n";
}

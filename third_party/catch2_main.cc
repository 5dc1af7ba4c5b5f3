// The Catch2 v2 test runner's main(), compiled once for every cc_test.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

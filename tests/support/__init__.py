"""Helpers shared by the test suites: real processes the tests run against (etcd), never mocks."""

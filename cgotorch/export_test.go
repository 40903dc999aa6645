package cgotorch

// FailNthHandleAlloc exposes the shim's fault-injection hook to the external
// tests.
var FailNthHandleAlloc = failNthHandleAlloc

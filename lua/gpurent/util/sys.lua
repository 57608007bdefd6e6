-- gpurent.util.sys: the process primitives (runtime/sys.c) for the layers above
-- util/ and transport/, which do not reach gpurent.core themselves (tests/spec/
-- layers_spec.lua): the clock, sleep, tty, pid, and the Ctrl-C flag.
--
--   sys.now() -> seconds (monotonic, fractional)   sys.sleep(seconds)
--   sys.isatty(fd) -> boolean                       sys.getpid() -> integer
--   sys.interrupted() -> was Ctrl-C pressed (and not cleared)?
--   sys.clear_interrupt()   forget it while cleanup runs (closing a channel)
--   sys.set_interrupted()   restore it afterwards, so the exit code is still 130
return require("gpurent.core").sys

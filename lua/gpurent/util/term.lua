-- gpurent.util.term: the terminal primitives (runtime/term.c, editline) for the REPL
-- and prompts, which do not reach gpurent.core themselves (tests/spec/layers_spec.lua).
--
--   term.readline(prompt) -> line | false (Ctrl-C at the prompt) | nil (EOF)
--   term.add_history(line), term.load_history(file), term.save_history(file, max)
--   term.set_completer(fn(text, line, start) -> candidates)
--   term.clear_interrupt()   forget a Ctrl-C the REPL handled
--   term.read_secret(label) -> string, typed without echo
return require("gpurent.core").term

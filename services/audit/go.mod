module github.com/mcpid/mcpid/services/audit

go 1.26.0

toolchain go1.26.10

require github.com/mcpid/mcpid/gen v0.0.0-00010101000000-000000000000

replace github.com/mcpid/mcpid/gen => ../../gen

require github.com/mcpid/mcpid/lib v0.0.0-00010101000000-000000000000

replace github.com/mcpid/mcpid/lib => ../../lib

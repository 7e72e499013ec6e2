module github.com/mcpid/mcpid/gen

go 1.26.0

toolchain go1.26.10

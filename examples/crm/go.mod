module github.com/mcpid/mcpid/examples/crm

go 1.26.0

toolchain go1.26.10

replace (
	github.com/mcpid/mcpid/gen => ../../gen
	github.com/mcpid/mcpid/lib => ../../lib
	github.com/mcpid/mcpid/sdk/mcpguard => ../../sdk/mcpguard
	github.com/mcpid/mcpid/services/policy => ../../services/policy
)

require (
	github.com/mcpid/mcpid/gen v0.0.0-00010101000000-000000000000
	github.com/mcpid/mcpid/sdk/mcpguard v0.0.0-00010101000000-000000000000
	github.com/modelcontextprotocol/go-sdk v1.8.0
	google.golang.org/grpc v1.85.0
)

require (
	github.com/go-jose/go-jose/v4 v4.1.9 // indirect
	github.com/google/jsonschema-go v0.4.3 // indirect
	github.com/grpc-ecosystem/grpc-gateway/v2 v2.33.0 // indirect
	github.com/mcpid/mcpid/lib v0.0.0-00010101000000-000000000000 // indirect
	github.com/segmentio/asm v1.1.3 // indirect
	github.com/segmentio/encoding v0.5.4 // indirect
	github.com/yosida95/uritemplate/v3 v3.0.2 // indirect
	golang.org/x/net v0.61.0 // indirect
	golang.org/x/oauth2 v0.37.0 // indirect
	golang.org/x/sync v0.24.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	golang.org/x/time v0.16.0 // indirect
	google.golang.org/genproto/googleapis/api v0.0.0-20261026165753-2ffab32bce7e // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261110000943-09e21b237f2c // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

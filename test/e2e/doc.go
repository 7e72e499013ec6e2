// Package e2e holds whole-system tests: the official MCP Go SDK client with
// its OAuth handler, headless Chromium for sign-in and consent, against the
// four mcpid services and the example CRM MCP server on real etcd.
package e2e

package telemetry

import (
	"net/http"

	"go.opentelemetry.io/otel/trace"
)

func spanOf(r *http.Request) bool {
	return trace.SpanContextFromContext(r.Context()).IsValid()
}

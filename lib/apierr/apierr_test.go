package apierr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var errStore = errors.New("etcd: /mcpid/token/grants/g1: request timed out")

func TestToStatus(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := context.Background()

	notFound := New(codes.NotFound, "ERROR_REASON_GRANT_NOT_FOUND", "grant %q not found", "g1").WithCause(errStore)
	cases := []struct {
		name   string
		err    error
		code   codes.Code
		domain string
		reason string
		msg    string
	}{
		{"domain error", notFound, codes.NotFound, DomainMCPID, "ERROR_REASON_GRANT_NOT_FOUND", `grant "g1" not found`},
		{"wrapped domain error", fmt.Errorf("revoke: %w", notFound), codes.NotFound, DomainMCPID, "ERROR_REASON_GRANT_NOT_FOUND", `grant "g1" not found`},
		{"oauth invalid_client", OAuth("invalid_client", "unknown client"), codes.Unauthenticated, DomainOAuth, "invalid_client", "unknown client"},
		{"oauth invalid_grant", OAuth("invalid_grant", "code expired"), codes.InvalidArgument, DomainOAuth, "invalid_grant", "code expired"},
		{"oauth unavailable", OAuth("temporarily_unavailable", "later"), codes.Unavailable, DomainOAuth, "temporarily_unavailable", "later"},
		{"internal", fmt.Errorf("load grant: %w", errStore), codes.Internal, DomainMCPID, ReasonInternal, "internal error"},
		{"wrapped downstream status", fmt.Errorf("call policy: %w", status.Error(codes.NotFound, "policy secret detail")), codes.Internal, DomainMCPID, ReasonInternal, "internal error"},
	}
	for _, c := range cases {
		err := ToStatus(ctx, logger, "/svc/M", c.err)
		st := status.Convert(err)
		if st.Code() != c.code || st.Message() != c.msg {
			t.Errorf("%s: status %v %q, want %v %q", c.name, st.Code(), st.Message(), c.code, c.msg)
		}
		info := Info(err)
		if info == nil || info.GetDomain() != c.domain || info.GetReason() != c.reason {
			t.Errorf("%s: ErrorInfo %v, want %s/%s", c.name, info, c.domain, c.reason)
		}
		if strings.Contains(st.Message(), "etcd") || strings.Contains(st.Message(), "secret") {
			t.Errorf("%s: internal detail leaked: %q", c.name, st.Message())
		}
	}
	// The internal cause is logged (with the method) and still visible to errors.Is.
	if !strings.Contains(logs.String(), "request timed out") || !strings.Contains(logs.String(), "/svc/M") {
		t.Errorf("internal cause not logged: %s", logs.String())
	}
	if !errors.Is(notFound, errStore) {
		t.Error("cause not reachable through errors.Is")
	}

	if c := status.Code(ToStatus(ctx, logger, "m", context.Canceled)); c != codes.Canceled {
		t.Errorf("canceled -> %v", c)
	}
	if c := status.Code(ToStatus(ctx, logger, "m", fmt.Errorf("x: %w", context.DeadlineExceeded))); c != codes.DeadlineExceeded {
		t.Errorf("deadline -> %v", c)
	}
	bare := status.Error(codes.NotFound, "unknown service")
	if got := ToStatus(ctx, logger, "m", bare); status.Code(got) != codes.NotFound {
		t.Errorf("bare status changed: %v", got)
	}
	if ToStatus(ctx, logger, "m", nil) != nil {
		t.Error("nil error became non-nil")
	}
}

func TestWithMetadataDoesNotAlias(t *testing.T) {
	base := New(codes.InvalidArgument, ReasonInvalidField, "bad")
	a := base.WithMetadata("field", "a")
	b := base.WithMetadata("field", "b")
	if a.Metadata["field"] != "a" || b.Metadata["field"] != "b" || base.Metadata != nil {
		t.Fatalf("metadata aliased: %v %v %v", a.Metadata, b.Metadata, base.Metadata)
	}
}

func TestDetails(t *testing.T) {
	err := New(codes.InvalidArgument, ReasonInvalidField, "bad policy").
		WithViolations(FieldViolation{"policy.tools[0].name", "empty"}, FieldViolation{"policy.scopes[1]", "unknown"})
	st := status.Convert(ToStatus(context.Background(), slog.Default(), "m", err))
	var br *errdetails.BadRequest
	for _, d := range st.Details() {
		if b, ok := d.(*errdetails.BadRequest); ok {
			br = b
		}
	}
	if br == nil || len(br.GetFieldViolations()) != 2 || br.GetFieldViolations()[0].GetField() != "policy.tools[0].name" {
		t.Fatalf("BadRequest detail = %v", br)
	}
	if Info(st.Err()).GetReason() != ReasonInvalidField {
		t.Fatalf("ErrorInfo lost next to BadRequest: %v", st.Details())
	}

	limited := New(codes.ResourceExhausted, "ERROR_REASON_RATE_LIMITED", "slow down").WithRetryAfter(30 * time.Second)
	var ri *errdetails.RetryInfo
	for _, d := range status.Convert(limited).Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			ri = r
		}
	}
	if ri == nil || ri.GetRetryDelay().AsDuration() != 30*time.Second {
		t.Fatalf("RetryInfo detail = %v", ri)
	}
}

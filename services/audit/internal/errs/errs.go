// Package errs builds the audit service's caller-visible errors (apierr,
// reasons from auditv1.ErrorReason), so every package states them the same
// way and the server's interceptor maps them to gRPC status once.
package errs

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/apierr"
)

// New returns a caller-visible error with one of the audit reasons.
func New(code codes.Code, reason auditv1.ErrorReason, format string, args ...any) *apierr.Error {
	return apierr.New(code, reason.String(), format, args...)
}

// Field is INVALID_ARGUMENT / INVALID_FIELD naming the field (dotted path)
// in ErrorInfo.metadata["field"].
func Field(field, format string, args ...any) *apierr.Error {
	return New(codes.InvalidArgument, auditv1.ErrorReason_ERROR_REASON_INVALID_FIELD,
		"%s: %s", field, fmt.Sprintf(format, args...)).WithMetadata("field", field)
}

// PageToken is INVALID_ARGUMENT / PAGE_TOKEN_INVALID.
func PageToken() *apierr.Error {
	return New(codes.InvalidArgument, auditv1.ErrorReason_ERROR_REASON_PAGE_TOKEN_INVALID,
		"page_token is malformed or was issued for different filters")
}

// Store maps an etcd failure: etcd not answering (unavailable, timeout,
// no leader) becomes UNAVAILABLE / STORE_UNAVAILABLE; the caller's own
// cancellation stays as it is; anything else stays internal.
func Store(err error) error {
	if err == nil {
		return nil
	}
	var ae *apierr.Error
	if errors.As(err, &ae) || errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || unavailable(err) {
		return New(codes.Unavailable, auditv1.ErrorReason_ERROR_REASON_STORE_UNAVAILABLE,
			"the audit store did not answer; retry with backoff").WithCause(err)
	}
	return err
}

func unavailable(err error) bool {
	switch {
	case errors.Is(err, rpctypes.ErrTimeout), errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail),
		errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost), errors.Is(err, rpctypes.ErrNoLeader),
		errors.Is(err, rpctypes.ErrLeaderChanged), errors.Is(err, rpctypes.ErrTooManyRequests):
		return true
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if st, ok := status.FromError(e); ok {
			switch st.Code() {
			case codes.Unavailable, codes.DeadlineExceeded:
				return true
			}
		}
	}
	return false
}

// Package apierr is the one place where domain errors become gRPC statuses.
//
// Handlers return plain Go errors. Errors that callers should see are built
// with New or OAuth (or wrap one with %w); everything else is an internal
// error: it is logged with the trace id and answered with a fixed public
// message, so no internal detail (etcd keys, file paths, upstream bodies)
// ever reaches a caller. The mapping runs once, as a server interceptor.
//
// Every status carries google.rpc.ErrorInfo{Domain, Reason}: domain
// "mcpid.dev" with a stable reason from the service's ErrorReason enum, or
// domain "oauth2" with the RFC error code verbatim so the HTTP edge can answer
// exactly as RFC 6749 / 7591 / 6750 prescribe.
package apierr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Error domains carried in ErrorInfo.
const (
	DomainMCPID = "mcpid.dev"
	DomainOAuth = "oauth2"
)

// Reasons shared by every service (each service's ErrorReason enum lists
// them too, with the same names).
const (
	ReasonInternal         = "ERROR_REASON_INTERNAL"
	ReasonUnauthenticated  = "ERROR_REASON_CALLER_UNAUTHENTICATED"
	ReasonNotAllowed       = "ERROR_REASON_CALLER_NOT_ALLOWED"
	ReasonInvalidField     = "ERROR_REASON_INVALID_FIELD"
	ReasonPageTokenInvalid = "ERROR_REASON_PAGE_TOKEN_INVALID"
	ReasonStoreUnavailable = "ERROR_REASON_STORE_UNAVAILABLE"
)

// internalMessage is the only text an unexpected error ever shows a caller.
const internalMessage = "internal error"

// Error is an error meant to be seen by the caller.
type Error struct {
	Code     codes.Code
	Domain   string
	Reason   string
	Message  string            // public, safe to show
	Metadata map[string]string // public, safe to show (ErrorInfo.metadata)
	// Violations become a google.rpc.BadRequest detail (one per bad field).
	Violations []FieldViolation
	// RetryAfter, when positive, becomes a google.rpc.RetryInfo detail.
	RetryAfter time.Duration
	cause      error // internal, logged never returned
}

// FieldViolation names one invalid request field (a path such as
// "policy.tools[2].conditions[0].expression") and what is wrong with it.
type FieldViolation struct {
	Field       string
	Description string
}

// New returns a caller-visible error in the mcpid.dev domain.
func New(code codes.Code, reason, format string, args ...any) *Error {
	return &Error{Code: code, Domain: DomainMCPID, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// OAuth returns a caller-visible OAuth error: rfcError is the RFC error code
// ("invalid_grant", "invalid_client", ...), description becomes
// error_description. The gRPC code follows from the RFC error.
func OAuth(rfcError, description string) *Error {
	return &Error{Code: oauthCode(rfcError), Domain: DomainOAuth, Reason: rfcError, Message: description}
}

// WithCause records an internal cause (logged, available to errors.Is/As,
// never sent to the caller).
func (e *Error) WithCause(err error) *Error {
	c := *e
	c.cause = err
	return &c
}

// WithMetadata adds public key/value details to ErrorInfo.
func (e *Error) WithMetadata(kv ...string) *Error {
	c := *e
	c.Metadata = make(map[string]string, len(e.Metadata)+len(kv)/2)
	for k, v := range e.Metadata {
		c.Metadata[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		c.Metadata[kv[i]] = kv[i+1]
	}
	return &c
}

// WithViolations adds google.rpc.BadRequest field violations.
func (e *Error) WithViolations(vs ...FieldViolation) *Error {
	c := *e
	c.Violations = append(append([]FieldViolation(nil), e.Violations...), vs...)
	return &c
}

// WithRetryAfter adds a google.rpc.RetryInfo detail (rate limits).
func (e *Error) WithRetryAfter(d time.Duration) *Error {
	c := *e
	c.RetryAfter = d
	return &c
}

func (e *Error) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%s/%s: %s: %v", e.Domain, e.Reason, e.Message, e.cause)
	}
	return fmt.Sprintf("%s/%s: %s", e.Domain, e.Reason, e.Message)
}

// Unwrap exposes the internal cause to errors.Is and errors.As.
func (e *Error) Unwrap() error { return e.cause }

// GRPCStatus lets status.FromError and status.Code see the public status
// directly, even when the *Error is wrapped.
func (e *Error) GRPCStatus() *status.Status {
	st := status.New(e.Code, e.Message)
	details := []protoadapt.MessageV1{&errdetails.ErrorInfo{Domain: e.Domain, Reason: e.Reason, Metadata: e.Metadata}}
	if len(e.Violations) > 0 {
		br := &errdetails.BadRequest{}
		for _, v := range e.Violations {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Description})
		}
		details = append(details, br)
	}
	if e.RetryAfter > 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)})
	}
	if withDetails, err := st.WithDetails(details...); err == nil {
		return withDetails
	}
	return st
}

// oauthCode maps an RFC error code to the closest gRPC code.
func oauthCode(rfcError string) codes.Code {
	switch rfcError {
	case "invalid_client", "invalid_token":
		return codes.Unauthenticated
	case "unauthorized_client", "access_denied", "insufficient_scope", "unapproved_software_statement":
		return codes.PermissionDenied
	case "server_error":
		return codes.Internal
	case "temporarily_unavailable":
		return codes.Unavailable
	case "slow_down":
		return codes.ResourceExhausted
	default:
		return codes.InvalidArgument
	}
}

// ToStatus converts any error returned by a handler into the status the
// caller sees. ctx supplies the trace id for the log line of internal errors.
func ToStatus(ctx context.Context, logger *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	var apiErr *Error
	if errors.As(err, &apiErr) {
		if apiErr.cause != nil {
			logger.DebugContext(ctx, "request failed", "method", method, "reason", apiErr.Reason, "cause", apiErr.cause.Error())
		}
		return apiErr.GRPCStatus().Err()
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	// A status created deliberately by gRPC-aware code (interceptors, the
	// health service) passes through unchanged — but only a bare one: a
	// status from a downstream call wrapped in our error chain is internal.
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown && errors.Unwrap(err) == nil {
		return err
	}
	logger.ErrorContext(ctx, "internal error", "method", method, "error", err.Error())
	return (&Error{Code: codes.Internal, Domain: DomainMCPID, Reason: ReasonInternal, Message: internalMessage}).GRPCStatus().Err()
}

// UnaryServerInterceptor maps handler errors to statuses.
func UnaryServerInterceptor(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err != nil {
			return nil, ToStatus(ctx, logger, info.FullMethod, err)
		}
		return resp, nil
	}
}

// StreamServerInterceptor maps stream handler errors to statuses.
func StreamServerInterceptor(logger *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return ToStatus(ss.Context(), logger, info.FullMethod, handler(srv, ss))
	}
}

// Info extracts the ErrorInfo of a status error, or nil.
func Info(err error) *errdetails.ErrorInfo {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return nil
}

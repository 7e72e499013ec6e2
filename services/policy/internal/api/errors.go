package api

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/services/policy/internal/document"
	"github.com/mcpid/mcpid/services/policy/internal/store"
)

func reason(r policyv1.ErrorReason) string { return r.String() }

// invalidField is INVALID_ARGUMENT / INVALID_FIELD naming field, with a
// BadRequest detail.
func invalidField(field, format string, args ...any) error {
	desc := fmt.Sprintf(format, args...)
	return badRequest(reason(policyv1.ErrorReason_ERROR_REASON_INVALID_FIELD), field+": "+desc,
		map[string]string{"field": field}, []document.Violation{{Field: field, Description: desc}})
}

// invalidDocument is INVALID_ARGUMENT / POLICY_INVALID or MANIFEST_INVALID
// with one BadRequest violation per problem.
func invalidDocument(r policyv1.ErrorReason, what string, vs []document.Violation) error {
	msg := fmt.Sprintf("the %s is invalid: %d violation(s); first: %s: %s", what, len(vs), vs[0].Field, vs[0].Description)
	return badRequest(reason(r), msg, map[string]string{"violations": strconv.Itoa(len(vs))}, vs)
}

func badRequest(r, msg string, md map[string]string, vs []document.Violation) error {
	e := apierr.New(codes.InvalidArgument, r, "%s", msg)
	for k, v := range md {
		e = e.WithMetadata(k, v)
	}
	for _, v := range vs {
		e = e.WithViolations(apierr.FieldViolation{Field: v.Field, Description: v.Description})
	}
	return e
}

func resourceMismatch(canonical string) error {
	return apierr.New(codes.PermissionDenied, reason(policyv1.ErrorReason_ERROR_REASON_CALLER_RESOURCE_MISMATCH),
		"an MCP server may act only on its own resource").WithMetadata("resource", canonical)
}

func notFound(r policyv1.ErrorReason, format string, args ...any) error {
	return apierr.New(codes.NotFound, reason(r), format, args...)
}

func notSynced() error {
	return apierr.New(codes.Unavailable, reason(policyv1.ErrorReason_ERROR_REASON_STORE_UNAVAILABLE),
		"this replica has not finished loading policies; retry")
}

func pageTokenInvalid() error {
	return apierr.New(codes.InvalidArgument, reason(policyv1.ErrorReason_ERROR_REASON_PAGE_TOKEN_INVALID),
		"page_token is malformed, expired or was issued for other filters")
}

// storeError maps what the store returns (and etcd's failures) to statuses.
func storeError(err error) error {
	var re *store.RevisionError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrPolicyNotFound):
		return notFound(policyv1.ErrorReason_ERROR_REASON_POLICY_NOT_FOUND, "the resource has no operator policy")
	case errors.Is(err, store.ErrNotFound):
		return notFound(policyv1.ErrorReason_ERROR_REASON_RESOURCE_NOT_FOUND, "the resource has neither an operator policy nor a manifest")
	case errors.Is(err, store.ErrPolicyExists) && errors.As(err, &re):
		return apierr.New(codes.AlreadyExists, reason(policyv1.ErrorReason_ERROR_REASON_POLICY_ALREADY_EXISTS),
			"an operator policy already exists for the resource").WithMetadata("current_revision", strconv.FormatInt(re.Revision, 10))
	case errors.Is(err, store.ErrRevisionMismatch) && errors.As(err, &re):
		return apierr.New(codes.Aborted, reason(policyv1.ErrorReason_ERROR_REASON_REVISION_MISMATCH),
			"expected_revision is not the stored revision; read it again and retry").WithMetadata("current_revision", strconv.FormatInt(re.Revision, 10))
	case errors.Is(err, store.ErrCompacted) && errors.As(err, &re):
		return apierr.New(codes.OutOfRange, reason(policyv1.ErrorReason_ERROR_REASON_REVISION_COMPACTED),
			"the revision has been compacted; list again").WithMetadata("compact_revision", strconv.FormatInt(re.Revision, 10))
	case errors.Is(err, store.ErrFutureRevision) && errors.As(err, &re):
		return apierr.New(codes.OutOfRange, reason(policyv1.ErrorReason_ERROR_REASON_REVISION_AHEAD),
			"the revision is beyond the store's; list again").WithMetadata("current_revision", strconv.FormatInt(re.Revision, 10))
	case errors.Is(err, store.ErrInvalidPageToken):
		return pageTokenInvalid()
	case errors.Is(err, store.ErrConflict), unavailable(err):
		return apierr.New(codes.Unavailable, reason(policyv1.ErrorReason_ERROR_REASON_STORE_UNAVAILABLE),
			"the store is unavailable; retry with backoff").WithCause(err)
	}
	return err
}

// unavailable reports whether err says etcd could not answer in time.
func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if st, ok := status.FromError(e); ok {
			switch st.Code() {
			case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
				return true
			}
		}
	}
	return false
}

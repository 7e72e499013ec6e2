package registry

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
	"github.com/mcpid/mcpid/lib/apierr"
)

// Reasons, short names.
const (
	rInvalidField        = registrationv1.ErrorReason_ERROR_REASON_INVALID_FIELD
	rPageToken           = registrationv1.ErrorReason_ERROR_REASON_PAGE_TOKEN_INVALID
	rFieldMask           = registrationv1.ErrorReason_ERROR_REASON_INVALID_FIELD_MASK
	rEtag                = registrationv1.ErrorReason_ERROR_REASON_ETAG_MISMATCH
	rNotFound            = registrationv1.ErrorReason_ERROR_REASON_CLIENT_NOT_FOUND
	rExists              = registrationv1.ErrorReason_ERROR_REASON_CLIENT_ALREADY_EXISTS
	rMetadata            = registrationv1.ErrorReason_ERROR_REASON_INVALID_CLIENT_METADATA
	rRedirect            = registrationv1.ErrorReason_ERROR_REASON_INVALID_REDIRECT_URI
	rReservedScope       = registrationv1.ErrorReason_ERROR_REASON_RESERVED_SCOPE
	rReservedAudience    = registrationv1.ErrorReason_ERROR_REASON_RESERVED_AUDIENCE
	rInvalidResource     = registrationv1.ErrorReason_ERROR_REASON_INVALID_RESOURCE
	rCCNotPermitted      = registrationv1.ErrorReason_ERROR_REASON_CLIENT_CREDENTIALS_NOT_PERMITTED
	rManagedByConfig     = registrationv1.ErrorReason_ERROR_REASON_CLIENT_MANAGED_BY_CONFIG
	rFromDocument        = registrationv1.ErrorReason_ERROR_REASON_CLIENT_METADATA_FROM_DOCUMENT
	rNoSecret            = registrationv1.ErrorReason_ERROR_REASON_CLIENT_HAS_NO_SECRET
	rReasonRequired      = registrationv1.ErrorReason_ERROR_REASON_VERIFICATION_REASON_REQUIRED
	rClientLimit         = registrationv1.ErrorReason_ERROR_REASON_CLIENT_LIMIT_REACHED
	rDCRDisabled         = registrationv1.ErrorReason_ERROR_REASON_DYNAMIC_REGISTRATION_DISABLED
	rSourceNotAllowed    = registrationv1.ErrorReason_ERROR_REASON_SOURCE_ADDRESS_NOT_ALLOWED
	rRateLimited         = registrationv1.ErrorReason_ERROR_REASON_RATE_LIMITED
	rDuplicateLimit      = registrationv1.ErrorReason_ERROR_REASON_DUPLICATE_REGISTRATION_LIMIT_REACHED
	rIATRequired         = registrationv1.ErrorReason_ERROR_REASON_INITIAL_ACCESS_TOKEN_REQUIRED
	rIATInvalid          = registrationv1.ErrorReason_ERROR_REASON_INITIAL_ACCESS_TOKEN_INVALID
	rIATNotFound         = registrationv1.ErrorReason_ERROR_REASON_INITIAL_ACCESS_TOKEN_NOT_FOUND
	rRATInvalid          = registrationv1.ErrorReason_ERROR_REASON_REGISTRATION_ACCESS_TOKEN_INVALID
	rStatementInvalid    = registrationv1.ErrorReason_ERROR_REASON_SOFTWARE_STATEMENT_INVALID
	rStatementUnapproved = registrationv1.ErrorReason_ERROR_REASON_SOFTWARE_STATEMENT_UNAPPROVED
	rSuspended           = registrationv1.ErrorReason_ERROR_REASON_CLIENT_SUSPENDED
	rMethodMismatch      = registrationv1.ErrorReason_ERROR_REASON_AUTH_METHOD_MISMATCH
	rBadSecret           = registrationv1.ErrorReason_ERROR_REASON_INVALID_CLIENT_SECRET
	rSecretExpired       = registrationv1.ErrorReason_ERROR_REASON_CLIENT_SECRET_EXPIRED
	rBadAssertion        = registrationv1.ErrorReason_ERROR_REASON_INVALID_CLIENT_ASSERTION
	rReplayed            = registrationv1.ErrorReason_ERROR_REASON_CLIENT_ASSERTION_REPLAYED
	rCIMDNotTrusted      = registrationv1.ErrorReason_ERROR_REASON_CIMD_DOMAIN_NOT_TRUSTED
	rCIMDRefused         = registrationv1.ErrorReason_ERROR_REASON_CIMD_FETCH_REFUSED
	rCIMDFailed          = registrationv1.ErrorReason_ERROR_REASON_CIMD_FETCH_FAILED
	rCIMDInvalid         = registrationv1.ErrorReason_ERROR_REASON_CIMD_DOCUMENT_INVALID
)

// mcpidErr is a caller-visible error in the mcpid.dev domain.
func mcpidErr(code codes.Code, reason registrationv1.ErrorReason, format string, args ...any) *apierr.Error {
	return apierr.New(code, reason.String(), format, args...)
}

// oauthErr is an RFC error (domain oauth2) carrying the mcpid reason in
// ErrorInfo.metadata["mcpid_reason"], as the contract specifies.
func oauthErr(rfcError string, reason registrationv1.ErrorReason, description string) *apierr.Error {
	return apierr.OAuth(rfcError, description).WithMetadata("mcpid_reason", reason.String())
}

// fieldErr is INVALID_ARGUMENT / INVALID_FIELD naming the field in a
// BadRequest detail (and ErrorInfo.metadata["field"]).
func fieldErr(field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return mcpidErr(codes.InvalidArgument, rInvalidField, "%s: %s", field, msg).
		WithMetadata("field", field).
		WithViolations(apierr.FieldViolation{Field: field, Description: msg})
}

// retryErr is RESOURCE_EXHAUSTED with a RetryInfo detail.
func retryErr(reason registrationv1.ErrorReason, after time.Duration, format string, args ...any) error {
	return mcpidErr(codes.ResourceExhausted, reason, format, args...).WithRetryAfter(after.Round(time.Second))
}

// eventReason is the audit reason code of a refusal: the mcpid reason in
// snake case ("source_address_not_allowed", "invalid_redirect_uri", ...).
func eventReason(err error) (reason, rfcError string) {
	info := apierr.Info(err)
	if info == nil {
		return "internal", ""
	}
	r := info.GetReason()
	if info.GetDomain() == apierr.DomainOAuth {
		rfcError = r
		if m := info.GetMetadata()["mcpid_reason"]; m != "" {
			r = m
		}
	}
	return strings.ToLower(strings.TrimPrefix(r, "ERROR_REASON_")), rfcError
}

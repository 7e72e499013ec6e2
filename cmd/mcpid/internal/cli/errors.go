package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mcpid/mcpid/cmd/mcpid/internal/oauthlogin"
)

// Exit codes. They are part of the CLI's contract (docs/cli.md): scripts
// branch on them, so a code never changes meaning.
const (
	ExitOK            = 0 // success
	ExitError         = 1 // anything not listed below (internal errors)
	ExitUsage         = 2 // bad flags or arguments, or input the server refused as invalid
	ExitNotFound      = 3 // the named object does not exist
	ExitAuth          = 4 // not authenticated, or the role may not do this
	ExitConflict      = 5 // already exists, changed concurrently, or not possible in its state
	ExitUnavailable   = 6 // a service could not be reached or timed out
	ExitUnimplemented = 7 // the server does not implement this command's RPC (older release)
	ExitNegative      = 8 // the command ran and the answer is "no": chain broken, decision DENY
)

// usageError is a mistake on the command line, found before any call.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// negativeError is a result that scripts must see as failure (exit 8)
// although nothing went wrong: the chain is broken, the decision is DENY.
type negativeError struct{ msg string }

func (e *negativeError) Error() string { return e.msg }

// callError is a failed RPC with what the operator can do next.
type callError struct {
	what    string // the command's action, e.g. "listing clients"
	service string
	addr    string
	st      *status.Status
}

func (e *callError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", e.what, e.st.Message())
	for _, d := range e.st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			fmt.Fprintf(&b, " (%s)", d.GetReason())
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				fmt.Fprintf(&b, "\n  %s: %s", v.GetField(), v.GetDescription())
			}
		}
	}
	if hint := e.hint(); hint != "" {
		b.WriteString("\n")
		b.WriteString(hint)
	}
	return b.String()
}

// hint tells the operator what to do next for each kind of failure.
func (e *callError) hint() string {
	switch e.st.Code() {
	case codes.Unauthenticated:
		return "hint: no accepted credential. Run `mcpid login`, or set a bootstrap certificate with --cert-file/--key-file (see `mcpid config view`)."
	case codes.PermissionDenied:
		return "hint: your operator role may not do this (the auditor role is read-only). Ask an admin, or use an admin credential."
	case codes.Unavailable, codes.DeadlineExceeded:
		return fmt.Sprintf("hint: the %s service at %s did not answer. Is mcpid running (`mcpid dev`)? Check --%s-addr or the context (`mcpid config view`).", e.service, e.addr, e.service)
	case codes.Unimplemented:
		return fmt.Sprintf("hint: the %s service at %s does not implement this yet; upgrade the server.", e.service, e.addr)
	case codes.NotFound:
		return "hint: check the name; list what exists with the matching `list` command."
	case codes.Aborted:
		return "hint: it changed since you read it; read it again and retry."
	}
	return ""
}

// ExitCode maps an error to the CLI's exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	var ne *negativeError
	if errors.As(err, &ne) {
		return ExitNegative
	}
	var re *oauthlogin.RefusedError
	if errors.Is(err, errLoginExpired) || errors.As(err, &re) {
		return ExitAuth
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ExitUnavailable
	}
	var ce *callError
	if !errors.As(err, &ce) {
		if strings.HasPrefix(err.Error(), "unknown command") || strings.Contains(err.Error(), "unknown flag") ||
			strings.Contains(err.Error(), "flag needs an argument") || strings.Contains(err.Error(), "invalid argument") ||
			strings.Contains(err.Error(), "accepts ") || strings.Contains(err.Error(), "requires at least") || strings.Contains(err.Error(), "required flag") {
			return ExitUsage // cobra's own argument errors
		}
		return ExitError
	}
	switch ce.st.Code() {
	case codes.InvalidArgument, codes.OutOfRange:
		return ExitUsage
	case codes.NotFound:
		return ExitNotFound
	case codes.Unauthenticated, codes.PermissionDenied:
		return ExitAuth
	case codes.AlreadyExists, codes.Aborted, codes.FailedPrecondition:
		return ExitConflict
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return ExitUnavailable
	case codes.Unimplemented:
		return ExitUnimplemented
	}
	return ExitError
}

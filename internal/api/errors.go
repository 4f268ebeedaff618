package api

import (
	"errors"
	"fmt"
	"net/http"
)

// The kinds of error Cruz knows, one set for the whole project. Code that
// refuses something wraps one of them (Errorf) and everything above it wraps
// with %w, so that errors.Is(err, api.ErrNotFound) holds wherever the error
// came from: this agent, or another one over the wire. The mapping to and
// from HTTP statuses lives in this file only (HTTPStatus, and Error.Is on
// the client's side).
var (
	// ErrInvalid: the request is malformed or asks for something that can
	// never work (a bad flag value, an unknown node). 400.
	ErrInvalid = errors.New("invalid request")
	// ErrUnauthenticated: the request is not signed, or not signed right. 401.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: the caller may not do this (another user's job). 403.
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound: no such job, checkpoint, pod or node operation. 404.
	ErrNotFound = errors.New("not found")
	// ErrConflict: not now, in this state (busy, not running, address in use). 409.
	ErrConflict = errors.New("conflict")
	// ErrTooLarge: the request or its body is over a limit. 413.
	ErrTooLarge = errors.New("too large")
	// ErrUnavailable: the agent cannot serve it now (too many requests,
	// shutting down). 503.
	ErrUnavailable = errors.New("unavailable")
)

var statusOfKind = map[error]int{
	ErrInvalid:         http.StatusBadRequest,
	ErrUnauthenticated: http.StatusUnauthorized,
	ErrForbidden:       http.StatusForbidden,
	ErrNotFound:        http.StatusNotFound,
	ErrConflict:        http.StatusConflict,
	ErrTooLarge:        http.StatusRequestEntityTooLarge,
	ErrUnavailable:     http.StatusServiceUnavailable,
}

// kindError is an error of a kind, with its message and cause.
type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

// Errorf makes an error of kind (one of the Err* above) with a message like
// fmt.Errorf's; a %w in format keeps its cause for errors.Is and errors.As.
func Errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, err: fmt.Errorf(format, args...)}
}

// KindOf is the kind of err, or nil when it has none (an internal error).
func KindOf(err error) error {
	for kind := range statusOfKind {
		if errors.Is(err, kind) {
			return kind
		}
	}
	return nil
}

// HTTPStatus is the status an answer carrying err has: its kind's, or 500.
func HTTPStatus(err error) int {
	if s, ok := statusOfKind[KindOf(err)]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Error is an error answered by an agent: its HTTP status and message. It
// is of the kind its status stands for.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// Is makes errors.Is(err, api.ErrNotFound) true for a 404 answer, and so on.
func (e *Error) Is(target error) bool {
	s, ok := statusOfKind[target]
	return ok && s == e.Status
}

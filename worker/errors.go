package worker

import (
	"encoding/json"
	"errors"
	"net/http"
)

// ErrTemplate is wrapped by Model.EncodeChat when the model's chat template
// failed within the engine (it went over its render budget: a hostile or
// broken template). The request is answered 400 with code "template_error",
// and the worker keeps serving.
var ErrTemplate = errors.New("worker: chat template failed")

// codeTemplate is the error code of a request whose chat template failed.
const codeTemplate = "template_error"

// Error types in OpenAI's error object (the same names llama.cpp's server uses).
const (
	errTypeInvalid     = "invalid_request_error"
	errTypeRateLimit   = "rate_limit_error"
	errTypeUnavailable = "unavailable_error"
	errTypeServer      = "server_error"
)

// apiError is an HTTP error answered as OpenAI's
// {"error": {"message", "type", "param", "code"}} on every endpoint (the
// native SSE endpoint included, as long as the stream has not started).
type apiError struct {
	status int
	typ    string
	code   string
	param  string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(param, code, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: errTypeInvalid, code: code, param: param, msg: msg}
}

// ErrorBody is the JSON of an error response.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is OpenAI's error object. Param names the request field at
// fault, or is null.
type ErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

func (e *apiError) body() ErrorBody {
	d := ErrorDetail{Message: e.msg, Type: e.typ, Code: e.code}
	if e.param != "" {
		p := e.param
		d.Param = &p
	}
	return ErrorBody{Error: d}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.status == http.StatusTooManyRequests || e.status == http.StatusServiceUnavailable {
		// Slots free up within a generation; the node's scheduler may
		// also pick another worker.
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.status, e.body())
}

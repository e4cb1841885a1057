// Package apierror writes the node API's error answers, one JSON shape
// for every route: {"error":{"code":"…","message":"…","type":"…","param":null}},
// the shape of OpenAI's errors (type "invalid_request_error" for a 4xx,
// "server_error" for a 5xx; param, the request field at fault, is null:
// these errors are about the request as a whole), so an OpenAI client
// reads any of them.
package apierror

import (
	"encoding/json"
	"net/http"
)

// Body is the JSON body of a non-2xx API answer.
type Body struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Type    string `json:"type,omitempty"`
		// Param is always sent, as OpenAI sends it: null here.
		Param *string `json:"param"`
	} `json:"error"`
}

// Write answers status with code and msg.
func Write(w http.ResponseWriter, status int, code, msg string) {
	var e Body
	e.Error.Code, e.Error.Message, e.Error.Type = code, msg, Type(status)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(e)
}

// Type is OpenAI's error type for an HTTP status.
func Type(status int) string {
	if status >= 500 {
		return "server_error"
	}
	return "invalid_request_error"
}

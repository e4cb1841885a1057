// Package api declares the job API of a node: the operation names, each
// operation's request, and the results the operations emit. The node
// decodes requests into these types and emits these results; the CLI and
// any other client (node/client) build the requests and decode the
// results with the same types, so the two cannot drift apart.
//
// A request is a JSON object whose "operation" field names the operation
// and whose other fields are the request type's (Encode writes both).
// Operations that run on a hive embed OnHive: "hive" names the node that
// runs it ("" is the node asked).
//
// Decode reads a job body strictly: a field the operation's type does not
// declare is a *FieldError naming it (an infer job also passes the worker
// fields InferWorkerFields lists). InferRequest is strict under plain
// json.Unmarshal too.
//
// The package holds data types and their decoding only: no I/O, no state.
package api

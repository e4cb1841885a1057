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
// The package holds data types only: no I/O, no state.
package api

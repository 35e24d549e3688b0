package txn

// OutputSettings are the session settings that fix how PostgreSQL prints
// values as text (dates, times, intervals, floats, bytea): the values of a
// Transaction are text in these settings. The replication connection uses
// them (pgoutput prints values with the walsender's settings), and so must
// any connection whose text values are served next to the replicated ones,
// such as a shape's snapshot.
var OutputSettings = map[string]string{
	"TimeZone":           "UTC",
	"DateStyle":          "ISO, MDY",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "1",
	"bytea_output":       "hex",
}

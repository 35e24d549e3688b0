module github.com/batonhq/baton/status

go 1.26.0

replace (
	github.com/batonhq/baton/proto => ../proto
	github.com/batonhq/baton/settings => ../settings
)

require (
	github.com/batonhq/baton/proto v0.0.0-00010101000000-000000000000
	github.com/batonhq/baton/settings v0.0.0-00010101000000-000000000000
	github.com/jackc/pgerrcode v0.0.0-20250907135507-afb5586c32a6
	github.com/jackc/pgx/v5 v5.12.0
)

require (
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/grpc v1.85.0 // indirect
)

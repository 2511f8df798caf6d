module twlegal.local/pause

go 1.26

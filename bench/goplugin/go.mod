module weir.dev/goplugin

go 1.19

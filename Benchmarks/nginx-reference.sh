# Sourced by the load scripts: `start_nginx DIR` runs nginx with one worker answering a fixed 200 to every
# request (the reference a receiver's rate is compared with) on a free port of 127.0.0.1, and sets
# nginx_port; `stop_nginx DIR` stops it.
start_nginx() {
    mkdir -p "$1/nginx"/{client_body,proxy,fastcgi,uwsgi,scgi}
    nginx_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat > "$1/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $1/nginx/nginx.pid;
error_log $1/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $1/nginx/client_body; proxy_temp_path $1/nginx/proxy;
    fastcgi_temp_path $1/nginx/fastcgi; uwsgi_temp_path $1/nginx/uwsgi; scgi_temp_path $1/nginx/scgi;
    server {
        listen 127.0.0.1:$nginx_port;
        client_body_buffer_size 64k;
        location / { return 200 '{"outcome":"accepted"}'; }
    }
}
CONF
    nginx -p "$1/nginx" -c "$1/nginx/nginx.conf" -g 'daemon on; user root;'
    sleep 0.3
}

stop_nginx() { kill -QUIT "$(cat "$1/nginx/nginx.pid")"; sleep 0.3; }

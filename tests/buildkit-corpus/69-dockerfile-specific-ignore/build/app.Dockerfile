FROM 127.0.0.1:5000/kiln-corpus/busybox:1
COPY . /ctx/

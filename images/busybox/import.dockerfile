ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV LANG=C.UTF-8
WORKDIR /home/work
CMD ["/bin/sh"]
LABEL ai.backend.kernelspec="1"
LABEL ai.backend.features="batch uid-match"
LABEL ai.backend.runtime-type="app"
LABEL ai.backend.runtime-path="/bin/true"
LABEL ai.backend.base-distro="busybox"
LABEL ai.backend.service-ports="http-server:http:8080"
LABEL ai.backend.resource.min.cpu="1"
LABEL ai.backend.resource.min.mem="32m"
